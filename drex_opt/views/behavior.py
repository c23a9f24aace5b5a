"""Human views of ``drex-opt analyze`` and ``drex-opt runs`` (rich tables on stdout).

Only rendering: the objects shown are the ones ``--json`` prints. Warnings go to stderr so
they never mix with JSON on stdout.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer

from drex_opt.rules.behavior import FAILED, INPUTS, NOT_OBSERVED, STORED, EffectiveAnalysis, insights_of, observed
from drex_opt.run.metrics import NAMED_FROM_RAW, RunMetrics

_SEVERITY_STYLE = {"critical": "bold red", "warning": "bold yellow", "ok": "bold green",
                   FAILED: "bold red", NOT_OBSERVED: "bold yellow"}


def _console():
    from rich.console import Console

    return Console(highlight=False)


def _severity(severity: Any) -> str:
    from rich.markup import escape

    style = _SEVERITY_STYLE.get(severity, "bold")
    return f"[{style}]{escape(str(severity).upper())}[/]"


def _fraction(value: Any) -> str:
    """A rule input as a percentage; "missing" when the analysis counts it as missing."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return "missing"
    try:
        x = float(value)
    except OverflowError:
        return "out of range"
    if not math.isfinite(x):
        return "missing"
    text = f"{x:.1%}"
    return text if 0.0 <= x <= 1.0 else f"{text} (out of range)"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}"
    return str(value)


def print_analysis(run: RunMetrics, reading: EffectiveAnalysis) -> None:
    """The effective analysis (severity, focus, insights), the inputs table, then the other
    reading beside it when the stored analysis and drex-opt's rules differ."""
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    analysis = reading.analysis
    console.print(f"[bold]{escape(run.run_id or str(run.path))}[/]  [dim]{run.source}: {escape(str(run.file or run.path))}[/]")
    if reading.source == STORED:
        used = "stored in the summary (--recompute uses drex-opt's rules)"
    elif reading.stored is not None:
        used = "drex-opt's rules (--recompute; without it the stored analysis is used)"
    else:
        used = "drex-opt's rules (no usable analysis stored)"
    console.print(f"Analysis:   {used}")
    if reading.note:
        console.print(f"[yellow]  {escape(reading.note)}[/]")
    console.print(f"Severity:   {_severity(analysis.get('severity'))}")
    console.print(f"Next focus: [bold cyan]{escape(str(analysis.get('next_focus')))}[/]")
    console.print("Insights:")
    for line in insights_of(analysis) or ["(no insight stored)" if reading.source == STORED else "(no rule fired)"]:
        console.print(f"  • {escape(line)}")

    table = Table(title="Metrics", title_justify="left", show_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("log key", style="dim")
    unlogged = set(run.extra.get("not_logged") or [])
    for name in INPUTS:
        value = "not logged" if name in unlogged and run.inputs.get(name) is None else _fraction(run.inputs.get(name))
        table.add_row(name, value, NAMED_FROM_RAW[name])
    efficiency = f"{reading.rules['grip_efficiency']:.3g}" if observed(run.inputs) else "missing"
    table.add_row("grip_efficiency", efficiency, "grip_success / grip_attempts")
    for name, value in run.extra.items():
        if name not in ("error", "not_logged", "logged"):  # a sentence and lists, not metrics
            table.add_row(name, escape(_number(value)), NAMED_FROM_RAW.get(name, ""))
    console.print(table)
    if run.extra.get("error"):
        console.print(f"[red]Run error:[/] {escape(str(run.extra['error']))}")

    if reading.stored is None:
        return
    other = reading.other
    if other is None:
        console.print("[dim]The analysis stored in the summary agrees with drex-opt's rules (severity and focus).[/]")
        return
    if reading.source == STORED:
        console.print("[yellow]The analysis stored in the summary disagrees with drex-opt's rules; the stored one "
                      "is used (--recompute uses the rules):[/]")
        label = "drex-opt's rules"
    else:
        console.print("[yellow]The analysis stored in the summary disagrees with drex-opt's rules; the rules are "
                      "used (--recompute); without --recompute the stored one is used:[/]")
        label = "Stored analysis"
    for line in reading.disagreement:
        console.print(f"  [yellow]• {escape(line)}[/]")
    console.print(f"{label}: severity {_severity(other.get('severity'))}, "
                  f"next focus [bold]{escape(str(other.get('next_focus')))}[/]")
    for line in insights_of(other):
        console.print(f"  [dim]• {escape(line)}[/]")


def _rate(value: float | None, delta: float | None) -> str:
    """The rate, and below it the change since the previous run in points (kept narrow)."""
    text = "—" if value is None else f"{value:.1%}"
    return text if delta is None else f"{text}\n[dim]{delta:+.1f}[/]"


def print_runs(rows: Sequence[Mapping[str, Any]], directory: Path, recompute: bool = False) -> None:
    """The run history table, oldest first; runs whose stored analysis disagrees are marked *."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    table = Table(
        title=f"Runs in {escape(str(directory))}, oldest first (under each rate: change in points)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("run", overflow="fold", min_width=12)
    for header in ("grip", "delivery", "e2e"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("focus", no_wrap=True)
    # Step columns only where some run has them (drex-opt's own runs; autopilot iterations).
    steps = any(row.get("drone_agent_steps") is not None for row in rows)
    compute = any(row.get("compute") for row in rows)
    if steps:
        table.add_column("drone steps", justify="right", no_wrap=True)
    if compute:
        table.add_column("compute\nrun + study = loop", justify="right", no_wrap=True)
    for row in rows:
        marker = " *" if row["disagreement"] else ""
        table.add_row(
            escape(str(row["run_id"])) + marker,
            *(_rate(row[name], row["delta"][name]) for name in ("grip_success", "delivery_success", "end_to_end_success")),
            _severity(row["severity"]),
            escape(str(row["next_focus"])),
            *([_steps(row.get("drone_agent_steps"))] if steps else []),
            *([_compute(row.get("compute"))] if compute else []),
        )
    console.print(table)
    if not rows:
        console.print("No run folder with a summary.json.")
    if any(row["disagreement"] for row in rows):
        shown = ("drex-opt's rules are shown (--recompute)" if recompute
                 else "the stored one is shown; --recompute shows the rules'")
        console.print(f"[dim]* the analysis stored in that summary differs from drex-opt's rules; {shown} "
                      "(see drex-opt analyze).[/]")


def _steps(n: Any) -> str:
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 100_000 else f"{int(n):,}"


def _compute(c: Mapping[str, Any] | None) -> str:
    """An autopilot iteration's agent steps: its run, its study, the loop so far."""
    if not c:
        return "-"
    return f"{_steps(c.get('run_agent_steps'))} + {_steps(c.get('study_agent_steps'))} = {_steps(c.get('loop_agent_steps'))}"


def print_skipped(skipped: Sequence[tuple[Path, str]]) -> None:
    """One ``warning:`` line on stderr per run folder that could not be read."""
    for folder, reason in skipped:
        typer.echo(f"warning: skipped {folder}: {reason}", err=True)
