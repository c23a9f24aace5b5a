#!/usr/bin/env python3
"""Do the contract tests notice when the code drifts from the documents?

Copies the repository (tracked files plus untracked ones that git does not ignore, so
new tests count before they are committed) to a temporary directory, then applies one
mutation at a time to the copy and runs the tests named for it there:

    CAUGHT  the tests failed, as they should
    MISSED  the tests passed although the code no longer follows the documents
    ERROR   the mutation's old text is not in the file exactly once (a stale mutation
            must never count), or the tests fail even without the mutation

Opt-in and slow (one pytest run per mutation); run from the repository root:

    .venv/bin/python scripts/mutation_check.py            # every mutation
    .venv/bin/python scripts/mutation_check.py --list     # names only
    .venv/bin/python scripts/mutation_check.py --only safety.clip_coef-0-5

Exit code: 1 if any mutation is missed, else 2 if any error, else 0.
Standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
PYTEST = ("-m", "pytest", "-q", "-x", "-p", "no:cacheprovider")
RUN_TIMEOUT_S = 900

SAFETY = "drex_opt/rules/safety.py"
BEHAVIOR = "drex_opt/rules/behavior.py"
CONTRACT_TESTS = ("tests/test_brief_contract.py",)
PRECEDENCE_TESTS = ("tests/test_behavior_precedence.py",)


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]  # test files or node ids, relative to the repository root


# ---------------------------------------------------------------- hand-written mutations
HAND_MUTATIONS = [
    Mutation("safety.max_grad_norm-0-1000", SAFETY,
             '_float("train", "max_grad_norm", 0, 100)', '_float("train", "max_grad_norm", 0, 1000)', CONTRACT_TESTS),
    Mutation("safety.clip_coef-0-5", SAFETY,
             '_float("train", "clip_coef", 0, 1)', '_float("train", "clip_coef", 0, 5)', CONTRACT_TESTS),
    Mutation("safety.env.num_envs-1-4096", SAFETY,
             '_int("env", "num_envs", 1, MAX_COUNT)', '_int("env", "num_envs", 1, 4096)', CONTRACT_TESTS),
    Mutation("safety.MAX_COUNT-512", SAFETY, "MAX_COUNT = 256\n", "MAX_COUNT = 512\n", CONTRACT_TESTS),
    Mutation("safety.resume_from-accepts-.pth", SAFETY,
             'value.endswith(".pt")', 'value.endswith((".pt", ".pth"))', CONTRACT_TESTS),
    Mutation("safety.resume_points-add-last", SAFETY,
             'RESUME_POINTS = ("latest", "best")', 'RESUME_POINTS = ("latest", "best", "last")', CONTRACT_TESTS),
    Mutation("safety.no-divisibility-rule", SAFETY,
             "workers > 0 and envs % workers:", "workers > 0 and envs % workers and False:", CONTRACT_TESTS),
    Mutation("safety.batch-without-bptt", SAFETY,
             'TOPOLOGY = (("env", "num_envs"), ("env", "num_drones"), ("vec", "num_envs"), ("train", "bptt_horizon"))',
             'TOPOLOGY = (("env", "num_envs"), ("env", "num_drones"), ("vec", "num_envs"))', CONTRACT_TESTS),
    # behavior-rules.md
    Mutation("behavior.row1-grip-threshold-0.4", BEHAVIOR,
             'm["grip_success"] > 0.5 and m["delivery_success"] > 0.3',
             'm["grip_success"] > 0.4 and m["delivery_success"] > 0.3', PRECEDENCE_TESTS),
    Mutation("behavior.row3-not-strict", BEHAVIOR,
             'lambda m: m["collision_rate"] > 0.5,', 'lambda m: m["collision_rate"] >= 0.5,', PRECEDENCE_TESTS),
    Mutation("behavior.severity-warning-ignores-collisions", BEHAVIOR,
             'elif values["grip_success"] < 0.1 or values["collision_rate"] > 0.5:',
             'elif values["grip_success"] < 0.1:', PRECEDENCE_TESTS),
    Mutation("behavior.severity-warning-before-critical", BEHAVIOR,
             'if values["grip_attempts"] < 0.001:\n        severity = "critical"\n'
             '    elif values["grip_success"] < 0.1 or values["collision_rate"] > 0.5:\n        severity = "warning"\n',
             'if values["grip_success"] < 0.1 or values["collision_rate"] > 0.5:\n        severity = "warning"\n'
             '    elif values["grip_attempts"] < 0.001:\n        severity = "critical"\n', PRECEDENCE_TESTS),
    Mutation("behavior.insights-reversed", BEHAVIOR,
             "for _, holds, sentence in _RULES if holds(values)]",
             "for _, holds, sentence in reversed(_RULES) if holds(values)]", PRECEDENCE_TESTS),
]

# ---------------------------------------------------------------- further mutations
# Append Mutation(...) records here; they run after the others.
EXTRA_MUTATIONS: list[Mutation] = [
    # A sampled value the clamp changes must fail the trial, never train on another value.
    Mutation("study.clamp-changes-sampled-value-silently", "drex_opt/search/trial.py",
             "        if changed:\n", "        if False:\n", ("tests/test_study_clamp.py",)),
    # Clamp adjustments are recorded on the trial.
    Mutation("study.clamp-adjustments-dropped", "drex_opt/search/trial.py",
             "        return effective, adjustments\n", "        return effective, []\n",
             ("tests/test_study_clamp.py",)),
    # Storage passwords never reach the study's attributes or the dashboard.
    Mutation("study.command-stored-unredacted", "drex_opt/search/planning.py",
             "command=storage_mod.redact_command(settings.command)", "command=list(settings.command)",
             ("tests/test_redact.py",)),
    Mutation("storage.redact-keeps-password", "drex_opt/search/storage.py",
             'return _QUERY_PASSWORD.sub(r"\\1***", _URL_PASSWORD.sub(r"\\1:***@", text))', "return text",
             ("tests/test_redact.py",)),
    # A proposal that changes the topology must carry its derived sizes (validate).
    Mutation("safety.missing-sizes-accepted", SAFETY,
             "    check_missing = require_sizes and baseline is not None and not complete",
             "    check_missing = False",
             ("tests/test_safety.py::test_required_sizes_only_where_the_proposal_changes_them",
              "tests/test_cli_config.py::test_a_topology_change_must_carry_its_batch_sizes")),
    # The training child refuses batch sizes that do not match the agents it steps.
    Mutation("train.child-rederives-sizes-silently", "drex_opt/run/train.py",
             "        if env_name == BUILTIN_ENV:\n            raise TrainingFailed(",
             "        if False:\n            raise TrainingFailed(", ("tests/test_train_child.py",)),
]


# ---------------------------------------------------------------- generated mutations
SPEC_CALL = re.compile(r'_(float|int)\("(\w+)", "(\w+)", ([^,()]+), ([^,()]+?)(, derived=True)?\)')
CHOICE_CALL = re.compile(r'_choice\("(\w+)", "(\w+)"((?:, "[^"]*")+)\)')
# Keys whose lower end is also moved (the upper end is moved for every key).
LOWER_END_KEYS = ("train.learning_rate", "train.ent_coef", "train.total_timesteps", "train.seed",
                  "train.adam_eps", "env.num_drones", "vec.num_workers")


def specs_block(text: str) -> str:
    start = text.index("SPECS: tuple[KeySpec, ...] = (")
    return text[start:text.index("\n)\n", start)]


def range_mutations(text: str, already: set[str]) -> list[Mutation]:
    """One mutation per ranged key moving its upper end; some move the lower end too.

    Widening is what drift looks like, except for the derived batch sizes: they must equal
    a product that never exceeds their maximum, so only a lower maximum is observable.
    """
    block = specs_block(text)
    calls = [line.strip().rstrip(",") for line in block.splitlines() if line.strip().startswith(("_float(", "_int("))]
    mutations = []
    for call in calls:
        match = SPEC_CALL.fullmatch(call)
        if match is None:
            raise ValueError(f"cannot read the range of {call!r} in {SAFETY}")
        kind, section, name, low, high, derived = match.groups()
        key = f"{section}.{name}"
        if key in already:
            continue

        def rebuilt(new_low: str, new_high: str) -> str:
            return f'_{kind}("{section}", "{name}", {new_low}, {new_high}{derived or ""})'

        moved_high = f"{high} // 2" if derived else (f"{high} + 1" if kind == "int" else f"{high} * 2")
        mutations.append(Mutation(f"safety.{key}-upper", SAFETY, call, rebuilt(low, moved_high), CONTRACT_TESTS))
        if key in LOWER_END_KEYS:
            moved_low = f"{low} - 1" if kind == "int" else (f"{low} / 2" if float(low) else "-1.0")
            mutations.append(Mutation(f"safety.{key}-lower", SAFETY, call, rebuilt(moved_low, high), CONTRACT_TESTS))
    return mutations


def choice_mutations(text: str) -> list[Mutation]:
    """For every choice key: one choice added, and its last choice removed."""
    mutations = []
    for match in CHOICE_CALL.finditer(specs_block(text)):
        section, name, choices = match.groups()
        call = match.group(0)
        last = re.findall(r', "[^"]*"', choices)[-1]
        added = call[:-1] + ', "extra-choice")'
        removed = call.replace(last + ")", ")")
        mutations += [
            Mutation(f"safety.{section}.{name}-choice-added", SAFETY, call, added, CONTRACT_TESTS),
            Mutation(f"safety.{section}.{name}-choice-removed", SAFETY, call, removed, CONTRACT_TESTS),
        ]
    return mutations


def rule_blocks(text: str) -> dict[str, str]:
    """The source of each row of behavior.py's rules table, by focus."""
    start = text.index("_RULES = (")
    body = text[start:text.index("\n)\n", start)]
    return {m.group(1): m.group(0) for m in re.finditer(r'    \(\n        "(\w+)",\n.*?\n    \),\n', body, re.DOTALL)}


def order_mutations(text: str) -> list[Mutation]:
    rows = rule_blocks(text)
    stability, carrying = rows["fix_stability"], rows["improve_carrying"]
    coordination, diagnostic = rows["improve_coordination"], rows["diagnostic_grip"]
    return [
        Mutation("behavior.rows-3-4-swapped", BEHAVIOR, stability + carrying, carrying + stability, PRECEDENCE_TESTS),
        Mutation("behavior.row-6-before-4-5", BEHAVIOR, carrying + coordination + diagnostic,
                 diagnostic + carrying + coordination, PRECEDENCE_TESTS),
    ]


def all_mutations() -> list[Mutation]:
    safety_text = (ROOT / SAFETY).read_text()
    explicit_keys = {"train.max_grad_norm", "train.clip_coef", "env.num_envs"}
    return [
        *HAND_MUTATIONS,
        *range_mutations(safety_text, explicit_keys),
        *choice_mutations(safety_text),
        *order_mutations((ROOT / BEHAVIOR).read_text()),
        *EXTRA_MUTATIONS,
    ]


# ---------------------------------------------------------------- running
def copy_repository(target: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for relative in filter(None, listed.split("\0")):
        source = ROOT / relative
        if source.is_file():  # a tracked file deleted in the working tree is skipped
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)


def copy_env(copy: Path) -> dict:
    env = dict(os.environ)
    # PYTHONPATH is searched before the editable install's import hook, which is appended
    # to sys.meta_path; the console script started by the tests inherits it too.
    env["PYTHONPATH"] = str(copy) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_imports_copy(copy: Path, env: dict) -> None:
    """Fail unless the copy's drex_opt is imported, from the copy and from elsewhere."""
    for cwd in (copy, Path("/")):
        found = subprocess.run([str(PYTHON), "-c", "import drex_opt; print(drex_opt.__file__)"],
                               cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        path = Path(found.stdout.strip()).resolve()
        if found.returncode or copy.resolve() not in path.parents:
            sys.exit(f"error: from {cwd}, drex_opt is imported from {path or found.stderr.strip()}, not the copy {copy}")


def run_tests(copy: Path, env: dict, tests: tuple[str, ...]) -> tuple[bool, str]:
    """(passed, the first failing test or else pytest's last line)."""
    try:
        done = subprocess.run([str(PYTHON), *PYTEST, "-rfE", *tests], cwd=copy, env=env, capture_output=True,
                              text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {RUN_TIMEOUT_S} s"
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]
    shown = (failed or lines or ["no output"])[0].split(" - ", 1)[0]
    return done.returncode == 0, shown if len(shown) <= 140 else shown[:137] + "..."


def check(mutation: Mutation, copy: Path, env: dict) -> tuple[str, str]:
    path = copy / mutation.file
    original = path.read_text()
    count = original.count(mutation.old)
    if count != 1:
        return "ERROR", f"old text found {count} times in {mutation.file}"
    path.write_text(original.replace(mutation.old, mutation.new))
    try:
        passed, tail = run_tests(copy, env, mutation.tests)
    finally:
        path.write_text(original)
    return ("MISSED" if passed else "CAUGHT"), tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the mutation names and exit")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this mutation (repeatable)")
    args = parser.parse_args()

    try:
        mutations = all_mutations()
    except (ValueError, KeyError) as exc:
        print(f"error: cannot build the mutations: {exc}", file=sys.stderr)
        return 2
    names = [m.name for m in mutations]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        print(f"error: duplicate mutation names: {', '.join(sorted(duplicates))}", file=sys.stderr)
        return 2
    if args.list:
        for mutation in mutations:
            print(f"{mutation.name}\t{mutation.file}\t{' '.join(mutation.tests)}")
        return 0
    if args.only:
        unknown = set(args.only) - set(names)
        if unknown:
            print(f"error: unknown mutation(s): {', '.join(sorted(unknown))} (see --list)", file=sys.stderr)
            return 2
        mutations = [m for m in mutations if m.name in args.only]

    results: list[tuple[str, str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="drex-mutation-") as tmp:
        copy = Path(tmp) / "repo"
        copy_repository(copy)
        env = copy_env(copy)
        check_imports_copy(copy, env)
        # Unmutated, the tests must pass, or every mutation would look caught.
        for tests in dict.fromkeys(m.tests for m in mutations):
            passed, tail = run_tests(copy, env, tests)
            if not passed:
                print(f"error: {' '.join(tests)} fail without any mutation: {tail}", file=sys.stderr)
                return 2
        width = max(len(m.name) for m in mutations)
        for mutation in mutations:
            start = time.monotonic()
            verdict, detail = check(mutation, copy, env)
            seconds = time.monotonic() - start
            results.append((mutation.name, verdict, seconds, detail))
            print(f"{mutation.name:<{width}}  {verdict:<6}  {seconds:5.1f}s  {detail}", flush=True)

    counts = {verdict: sum(r[1] == verdict for r in results) for verdict in ("CAUGHT", "MISSED", "ERROR")}
    print(f"\n{len(results)} mutations: " + ", ".join(f"{n} {v.lower()}" for v, n in counts.items()))
    if counts["MISSED"]:
        return 1
    return 2 if counts["ERROR"] else 0


if __name__ == "__main__":
    sys.exit(main())
