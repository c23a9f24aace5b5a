#!/usr/bin/env bash
# Creates .venv in the repository root with torch, pufferlib 3.0.0 and drex-opt.
# Safe to re-run: steps already done are skipped, so a second run takes a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

# A stamp keyed on the files that define the environment makes re-runs instant.
stamp="$VENV/.drex-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"

# PufferLib's C envs named in DREX_PUFFER_ENVS (e.g. "drone"), built offline from its source
# distribution; none by default, so the default set-up stays as fast.
build_c_envs() {
    if [ -n "${DREX_PUFFER_ENVS:-}" ]; then
        "$VENV/bin/python" scripts/build_puffer_envs.py "$DREX_PUFFER_ENVS"
    fi
}

if [ -f "$stamp" ] && "$VENV/bin/python" -c "import pufferlib, drex_opt" 2>/dev/null; then
    build_c_envs
    exit 0
fi

# torch: keep whatever build is already there (a CUDA or MPS build stays a CUDA or MPS
# build); otherwise install the pinned release (TORCH_SPEC overrides it).
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    $PIP install "${TORCH_SPEC:-torch==2.13.0}"
fi

# pufferlib 3.0.0 is a source-only release and its setup.py cannot build offline as is:
#  - it imports torch at build time          -> --no-build-isolation, torch installed first;
#  - it downloads raylib/box2d for the C "ocean" envs -> NO_OCEAN=1 skips them (set
#    DREX_PUFFER_OCEAN=1 on a machine with internet to build them);
#  - with NO_OCEAN=1 it reads the undefined name `c_extension_paths` -> a sitecustomize on
#    PYTHONPATH defines it as an empty list for the build only;
#  - with nvcc on PATH it builds a CUDA kernel that fails against a CPU torch -> hide
#    nvcc only when the installed torch has no CUDA.
if ! "$VENV/bin/python" -c "import pufferlib" 2>/dev/null; then
    $PIP install "numpy<2" setuptools wheel   # imported by its setup.py as well
    shim=$(mktemp -d)
    trap 'rm -rf "$shim"' EXIT
    echo 'import builtins; builtins.c_extension_paths = []' > "$shim/sitecustomize.py"
    build_path=$PATH
    if [ "$("$VENV/bin/python" -c 'import torch; print(torch.version.cuda is not None)')" = False ]; then
        build_path=$(printf '%s' "$PATH" | tr ':' '\n' | while read -r d; do
            [ -x "$d/nvcc" ] || printf '%s:' "$d"; done)
        build_path=${build_path%:}
    fi
    if [ "${DREX_PUFFER_OCEAN:-0}" = 1 ]; then
        PATH=$build_path $PIP install --no-build-isolation "pufferlib==3.0.0"
    else
        PATH=$build_path NO_OCEAN=1 PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}" \
            $PIP install --no-build-isolation "pufferlib==3.0.0"
    fi
fi

$PIP install -e ".[test]"
rm -f "$VENV"/.drex-setup-*
touch "$stamp"
build_c_envs
