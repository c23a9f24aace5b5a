"""Build PufferLib's C ("ocean") envs offline: ``build_puffer_envs.py drone [other ...]``.

pufferlib 3.0.0 installs here without its C envs (its build downloads box2d, which only
``impulse_wars`` uses). Its source distribution carries everything else: each env's
``binding.c``, the shared ``env_binding.h`` and raylib for Linux. This compiles the named
envs' bindings from it with the flags PufferLib's own ``setup.py`` uses and puts each one
where PufferLib imports it (``pufferlib/ocean/<env>/binding<EXT_SUFFIX>``).

Run by ``scripts/setup.sh`` when ``DREX_PUFFER_ENVS`` names envs (comma or space
separated). An env already built is skipped, so a re-run takes a moment. The list asked
for is written to ``.venv/drex-puffer-envs.txt``: the tests of a built env run whenever it
was asked for, instead of being skipped.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

VERSION = "3.0.0"
RAYLIB = "raylib-5.5_linux_amd64"
ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(sys.prefix) / "pufferlib-src"
ASKED = Path(sys.prefix) / "drex-puffer-envs.txt"
# PufferLib 3.0.0 setup.py's flags for a release build on Linux.
COMPILE_FLAGS = ["-DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION", "-DPLATFORM_DESKTOP", "-O2", "-flto",
                 "-Wno-alloc-size-larger-than", "-Wno-implicit-function-declaration", "-fmax-errors=3"]
LINK_FLAGS = ["-fwrapv", "-O2", "-Wl,-Bsymbolic-functions"]


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def installed_pufferlib() -> Path:
    spec = importlib.util.find_spec("pufferlib")
    if spec is None or not spec.origin:
        fail("pufferlib is not installed in this environment; run scripts/setup.sh first")
    return Path(spec.origin).parent


def binding_path(pufferlib_dir: Path, env: str) -> Path:
    return pufferlib_dir / "ocean" / env / f"binding{sysconfig.get_config_var('EXT_SUFFIX')}"


def without_nvcc(path: str) -> str:
    """PATH minus folders holding nvcc: its CUDA build step fails against a CPU torch."""
    return os.pathsep.join(d for d in path.split(os.pathsep) if d and not (Path(d) / "nvcc").exists())


def source_tree() -> Path:
    """The unpacked source distribution (downloaded once into the venv)."""
    tree = CACHE / f"pufferlib-{VERSION}"
    if (tree / "pufferlib" / "ocean" / "env_binding.h").is_file():
        return tree
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / f"pufferlib-{VERSION}.tar.gz"
    if not archive.is_file():
        with tempfile.TemporaryDirectory() as shim:
            # pip reads the sdist's metadata, which runs its setup.py: the same offline
            # workarounds as the install (no ocean download, the name it forgets, no nvcc).
            Path(shim, "sitecustomize.py").write_text("import builtins; builtins.c_extension_paths = []\n")
            env = dict(os.environ, NO_OCEAN="1", PATH=without_nvcc(os.environ.get("PATH", "")),
                       PYTHONPATH=os.pathsep.join(filter(None, [shim, os.environ.get("PYTHONPATH")])))
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
                                   "--no-binary", ":all:", "--disable-pip-version-check", "-q",
                                   f"pufferlib=={VERSION}", "-d", str(CACHE)], env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not archive.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            fail(f"could not download the pufferlib {VERSION} source distribution: {tail[0]}")
    wanted = (f"pufferlib-{VERSION}/pufferlib/ocean/", f"pufferlib-{VERSION}/{RAYLIB}/")
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(wanted)]
        tar.extractall(CACHE, members=members, filter="data")
    return tree


def build(env: str, tree: Path, pufferlib_dir: Path) -> None:
    source = tree / "pufferlib" / "ocean" / env / "binding.c"
    if not source.is_file():
        known = sorted(p.parent.name for p in (tree / "pufferlib" / "ocean").glob("*/binding.c"))
        fail(f"pufferlib {VERSION} has no C env {env!r}; its C envs: {', '.join(known)}")
    if not (pufferlib_dir / "ocean" / env).is_dir():
        fail(f"the installed pufferlib has no folder ocean/{env}")
    import numpy

    out = binding_path(pufferlib_dir, env)
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(tmp) / out.name
        command = [cc, "-shared", "-fPIC", *COMPILE_FLAGS,
                   f"-I{sysconfig.get_paths()['include']}", f"-I{numpy.get_include()}",
                   f"-I{tree / RAYLIB / 'include'}", str(source), str(tree / RAYLIB / "lib" / "libraylib.a"),
                   "-lm", *LINK_FLAGS, "-o", str(built)]
        proc = subprocess.run(command, capture_output=True, text=True, cwd=source.parent)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if "error" in line] or proc.stderr.splitlines()
            fail(f"compiling {env}'s binding failed: {lines[0] if lines else 'no compiler output'}")
        shutil.move(str(built), out)  # a finished file only: never a half-written binding
    check = subprocess.run([sys.executable, "-c", f"import pufferlib.ocean.{env}.binding"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        out.unlink(missing_ok=True)
        fail(f"{env}'s binding was built but does not import: {check.stderr.strip().splitlines()[-1:]}")
    print(f"built pufferlib.ocean.{env} -> {out}")


def main(argv: list[str]) -> None:
    envs = [e for arg in argv for e in arg.replace(",", " ").split()]
    if not envs:
        fail("name the C envs to build, e.g. drone")
    bad = [e for e in envs if not e.replace("_", "").isalnum()]
    if bad:
        fail(f"not an env name: {bad[0]!r} (names like drone, drone_delivery)")
    pufferlib_dir = installed_pufferlib()
    todo = [e for e in envs if not binding_path(pufferlib_dir, e).is_file()]
    if todo:
        tree = source_tree()
        for env in todo:
            build(env, tree, pufferlib_dir)
    ASKED.write_text("\n".join(envs) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
