"""Human views of ``drex-opt validate`` and ``drex-opt spaces``.

Only rendering: the objects shown are the ones ``--json`` prints. ``validate`` keeps stdout
pure JSON (the overrides, ready to redirect into a file); verdicts and adjustments go to
stderr.
"""

from __future__ import annotations

from collections.abc import Mapping

import typer

from drex_opt.jsonio import dumps
from drex_opt.rules.safety import Review
from drex_opt.search.spaces import ParamSpec, SearchSpace


def _console():
    from rich.console import Console

    return Console(highlight=False)


def print_review(review: Review, baseline: str, clamped: bool, here: bool = False) -> None:
    """Problems one per line on stderr; otherwise the overrides on stdout and a verdict on stderr.

    Warnings (the brief's topology advice) follow on stderr, prefixed ``warning:``.
    """
    for warning in review.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if not review.valid and not clamped:
        for problem in review.problems:
            typer.echo(problem, err=True)
        return
    typer.echo(dumps(review.overrides))
    if not clamped:
        where = " and this machine" if here else ""
        typer.echo(f"valid against the {baseline} baseline{where}", err=True)
    elif review.adjustments:
        typer.echo(f"{len(review.adjustments)} adjustment(s) against the {baseline} baseline:", err=True)
        for adjustment in review.adjustments:
            typer.echo(f"  - {adjustment}", err=True)
    else:
        typer.echo(f"nothing to adjust: valid against the {baseline} baseline", err=True)


def _steps(n: int) -> str:
    """A timestep count in short form (150k, 1.5M); the exact value is in --json."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size:
            return f"{n / size:.4g}{suffix}"
    return str(n)


def print_spaces(spaces: Mapping[str, SearchSpace]) -> None:
    """One row per focus: budget on both baselines and the number of searched params."""
    from rich.table import Table

    table = Table(title="Search spaces (timesteps per trial on the quick / full baseline)")
    table.add_column("focus", no_wrap=True)
    for column in ("quick", "full", "trials", "random", "repeats", "params"):
        table.add_column(column, justify="right")
    for focus, space in spaces.items():
        b = space.budget
        params = "inherit" if space.inherit else str(len(space.params))
        row = (_steps(b.quick_timesteps), _steps(b.full_timesteps), str(b.trials), str(b.startup_trials), str(b.repeats), params)
        table.add_row(focus, *row)
    _console().print(table)


def _range(p: ParamSpec) -> str:
    if p.type == "categorical":
        return ", ".join(str(choice) for choice in p.choices or ())
    return f"{p.low:g} – {p.high:g}"


def print_space(space: SearchSpace) -> None:
    """Description, budget and the params table of one focus."""
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    b = space.budget
    console.print(f"[bold]{space.focus}[/]  [dim]{escape(str(space.source or ''))}[/]")
    console.print(escape(space.description))
    console.print(
        f"budget: quick {b.quick_timesteps:,} / full {b.full_timesteps:,} timesteps per trial, "
        f"{b.trials} trials ({b.startup_trials} random first), {b.repeats} seed repeat(s)"
    )
    if space.inherit:
        console.print("params: the previous focus's space, narrowed around the best known configuration")
        return
    table = Table()
    for column in ("param", "type", "range / choices", "scale", "step"):
        table.add_column(column)
    for name, p in space.params.items():
        scale = "" if p.type == "categorical" else ("log" if p.log else "linear")
        table.add_row(name, p.type, _range(p), scale, "" if p.step is None else f"{p.step:g}")
    console.print(table)
