"""The lab notebook: plain-text entries appended to a run's ``notes.txt``.

An entry says what a person needs in a minute: the behaviour seen, why this experiment,
what was tried, what won and by how much, which parameters mattered and why, and the
next step. Entries are only ever appended; a notebook is never truncated.
"""

from __future__ import annotations

import os
import textwrap
from datetime import datetime, timezone
from pathlib import Path

from drex_opt.rules.objectives import pct

WIDTH = 92


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _wrap(text: str, indent: str = "  ") -> str:
    # Paths and names are never cut: a reader copies them from the note.
    return textwrap.fill(" ".join(str(text).split()), WIDTH, initial_indent=indent, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)


def append_entry(path: str | Path, text: str) -> Path:
    """Append ``text`` (one entry) to the notebook at ``path``; never truncates."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a", encoding="utf-8") as fh:
        if fh.tell() > 0:
            fh.write("\n")
        fh.write(text.rstrip("\n") + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return p


def sidecar_path(proposal: str | Path) -> Path:
    """The proposal's notes file: ``next_config.json`` → ``next_config.notes.md``.

    It holds the theory behind the proposal (the brief asks for the why, which JSON keys
    cannot carry): ``drex-opt export`` writes it, a person may write it by hand, and the
    autopilot quotes it in the next run's entry and then resets it with the proposal.
    """
    p = Path(proposal)
    return p.with_name(f"{p.stem}.notes.md")


def read_sidecar(proposal: str | Path) -> str | None:
    """The proposal's notes text, or None when there is none (missing, empty or unreadable)."""
    try:
        text = sidecar_path(proposal).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text.strip() or None


def behaviour_lines(analysis: dict | None) -> list[str]:
    if not analysis:
        return ["Behaviour: no analysis available."]
    lines = [f"Behaviour: severity {analysis.get('severity')}, next focus {analysis.get('next_focus')}"]
    lines += [_wrap(f"- {insight}") for insight in analysis.get("insights") or []]
    return lines


def run_entry(run_id: str, mode: str, changed: dict, summary: dict, previous: dict | None,
              next_step: str, why: str | None = None, advice: list[str] | None = None) -> str:
    """The entry for one autopilot run: what changed and why, how it did, what it shows, what next.

    Args:
        changed: the keys whose values differ from the baseline (nested).
        why: the proposal's notes (its sidecar, see :func:`sidecar_path`), quoted as written.
        advice: the brief's topology advice for this machine, one sentence each.
    """
    lines = [f"=== {_now()} - run {run_id} ({mode} mode) ==="]
    if changed:
        changes = ", ".join(f"{s}.{k}={v}" for s, values in changed.items() for k, v in values.items())
        lines.append(_wrap(f"Changed from the baseline: {changes}", ""))
    else:
        lines.append("Changed from the baseline: nothing (baseline configuration).")
    if why:
        lines.append("Why (the proposal's notes):")
        lines += [f"  | {line}".rstrip() for line in why.splitlines()]
    else:
        lines.append("Why: no notes came with the proposal.")
    lines += [_wrap(f"Topology advice: {line}", "") for line in advice or []]
    status = summary.get("status")
    result = (f"Result ({status}, {summary.get('agent_steps', 0):,} steps, {summary.get('wall_time_s', 0):.0f} s): "
              f"grip {pct(summary.get('grip_success'), 'n/a')}, delivery {pct(summary.get('delivery_success'), 'n/a')}, "
              f"end-to-end {pct(summary.get('end_to_end_success'), 'n/a')}")
    if previous:
        deltas = []
        for key, label in (("grip_success", "grip"), ("delivery_success", "delivery"), ("end_to_end_success", "e2e")):
            now, before = summary.get(key), previous.get(key)
            if now is not None and before is not None:
                deltas.append(f"{label} {100 * (now - before):+.1f} pts")
        if deltas:
            result += f"; vs run {previous.get('run_id')}: " + ", ".join(deltas)
    lines.append(_wrap(result, ""))
    if summary.get("error"):
        lines.append(_wrap(f"Error: {summary['error']}", ""))
    if summary.get("started_from"):
        before, total = summary.get("started_from_agent_steps"), summary.get("drone_agent_steps")
        seen = f" ({before:,} agent steps before this run, {total:,} in all)" if isinstance(total, int) else ""
        lines.append(_wrap(f"Drone: continued {summary['started_from']}{seen}; optimizer state "
                           f"{summary.get('optimizer_state') or 'n/a'}.", ""))
    lines += behaviour_lines(summary.get("behavioral_analysis"))
    lines.append(_wrap(f"Next step: {next_step}", ""))
    return "\n".join(lines) + "\n"


def compute_entry(run_id: str, run_steps: int, study_steps: int, loop_steps: int, budget: str) -> str:
    """The compute of one autopilot iteration: its run, its study, the loop so far."""
    return (f"=== {_now()} - compute of iteration {run_id} ===\n"
            + _wrap(f"Agent steps: run {run_steps:,} + study {study_steps:,} = {run_steps + study_steps:,}; "
                    f"the loop so far {loop_steps:,}{budget}.", "") + "\n")


def study_entry(info: dict) -> str:
    """The entry for an exported study result (see :func:`drex_opt.search.export.export`)."""
    lines = [f"=== {_now()} - study {info['study_name']} -> {info['out']} ==="]
    lines += behaviour_lines(info.get("analysis"))
    if info.get("theory"):
        lines.append("Why this experiment (focus " + str(info.get("focus")) + "):")
        lines.append(_wrap(info["theory"]))
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(info["states"].items()))
    start = "from fresh weights"
    if info.get("warm_start"):
        seen = info.get("warm_start_agent_steps")
        start = (f"each continuing the drone in {info['warm_start']}"
                 + (f" ({seen:,} agent steps trained)" if isinstance(seen, int) else ""))
    lines.append(_wrap(f"What was tried: {info['trials']} trials of {info['timesteps']:,} steps on the "
                       f"{info['baseline']} baseline, {start} ({states}).", ""))
    if info.get("warm_start_declined"):
        lines.append(_wrap(f"Why fresh weights: {info['warm_start_declined']}.", ""))
    if info.get("objectives_note"):
        lines.append(_wrap(f"Objectives: {info['objectives_note']}.", ""))
    lines.append(_wrap(f"What won: {info['explanation']}", ""))
    if info.get("versus_baseline"):
        control = "the control (continuing unchanged)" if info.get("warm_start") else "the baseline trial"
        lines.append(_wrap(f"Against {control}: {info['versus_baseline']}", ""))
    if info.get("resume_from"):
        seen = info.get("drone_agent_steps")
        lines.append(_wrap(f"The drone: the next run continues the winner's checkpoint {info['resume_from']}"
                           + (f" ({seen:,} agent steps trained in all)" if isinstance(seen, int) else "")
                           + " (autopilot.resume_mode continue), not "
                           + ("the drone the study started from." if info.get("warm_start") else "the run's drone."), ""))
    if info.get("importances"):
        top = ", ".join(f"{name} {value:.2f}" for name, value in info["importances"])
        lines.append(_wrap(f"Parameters that mattered most (importance for {info['importance_target']}): {top}", ""))
    else:
        lines.append("Parameters that mattered most: not ranked (fewer than 3 completed trials, or all scored alike).")
    if info.get("changes"):
        lines.append(_wrap("Theory: the winner moved " + "; ".join(info["changes"]) + ". "
                           + (info.get("theory_short") or ""), ""))
    lines.append(_wrap(f"Next step: {info['next_step']}", ""))
    return "\n".join(lines) + "\n"
