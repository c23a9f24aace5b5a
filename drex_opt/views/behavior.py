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

from drex_opt.rules.behavior import INPUTS
from drex_opt.run.metrics import NAMED_FROM_RAW, RunMetrics

_SEVERITY_STYLE = {"critical": "bold red", "warning": "bold yellow", "ok": "bold green"}


def _console():
    from rich.console import Console

    return Console(highlight=False)


def _severity(severity: str) -> str:
    style = _SEVERITY_STYLE.get(severity, "bold")
    return f"[{style}]{severity.upper()}[/]"


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


def print_analysis(run: RunMetrics, analysis: Mapping[str, Any], disagreements: Sequence[str]) -> None:
    """Severity, focus, insights, the inputs table and any disagreement with a stored analysis."""
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    console.print(f"[bold]{escape(run.run_id or str(run.path))}[/]  [dim]{run.source}: {escape(str(run.file or run.path))}[/]")
    console.print(f"Severity:   {_severity(analysis['severity'])}")
    console.print(f"Next focus: [bold cyan]{analysis['next_focus']}[/]")
    console.print("Insights:")
    for line in analysis["insights"] or ["(no rule fired)"]:
        console.print(f"  • {escape(line)}")

    table = Table(title="Metrics", title_justify="left", show_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("log key", style="dim")
    for name in INPUTS:
        table.add_row(name, _fraction(run.inputs.get(name)), NAMED_FROM_RAW[name])
    table.add_row("grip_efficiency", f"{analysis['grip_efficiency']:.3g}", "grip_success / grip_attempts")
    for name, value in run.extra.items():
        table.add_row(name, escape(_number(value)), NAMED_FROM_RAW.get(name, ""))
    console.print(table)

    if run.existing_analysis is None:
        return
    if disagreements:
        console.print("[yellow]The analysis stored in the summary disagrees with the rules:[/]")
        for line in disagreements:
            console.print(f"  [yellow]• {escape(line)}[/]")
    else:
        console.print("[dim]The analysis stored in the summary agrees (severity and focus).[/]")


def _rate(value: float | None, delta: float | None) -> str:
    """The rate, and below it the change since the previous run in points (kept narrow)."""
    text = "—" if value is None else f"{value:.1%}"
    return text if delta is None else f"{text}\n[dim]{delta:+.1f}[/]"


def print_runs(rows: Sequence[Mapping[str, Any]], directory: Path) -> None:
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
    for row in rows:
        marker = " *" if row["disagreement"] else ""
        table.add_row(
            escape(str(row["run_id"])) + marker,
            *(_rate(row[name], row["delta"][name]) for name in ("grip_success", "delivery_success", "end_to_end_success")),
            _severity(row["severity"]),
            row["next_focus"],
        )
    console.print(table)
    if not rows:
        console.print("No run folder with a summary.json.")
    if any(row["disagreement"] for row in rows):
        console.print("[dim]* the analysis stored in that summary differs from the rules (see drex-opt analyze).[/]")


def print_skipped(skipped: Sequence[tuple[Path, str]]) -> None:
    """One ``warning:`` line on stderr per run folder that could not be read."""
    for folder, reason in skipped:
        typer.echo(f"warning: skipped {folder}: {reason}", err=True)
