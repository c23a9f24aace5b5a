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
from drex_opt.search.spaces import Budget, ParamSpec, SearchSpace, WarmParamSpec


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
    """One row per focus: budget on both baselines and the number of searched params (scratch / warm)."""
    from rich.table import Table

    # The warm count shares the params column: the table must fit an 80-column terminal.
    table = Table(title="Search spaces (timesteps per trial on the quick / full baseline)",
                  caption="params: searched from scratch / in a warm start (-: the file has no \\[warm])")
    table.add_column("focus", no_wrap=True)
    for column in ("quick", "full", "trials", "random", "repeats", "params"):
        table.add_column(column, justify="right")
    for focus, space in spaces.items():
        b = space.budget
        warm = "-" if space.warm is None else str(len(space.warm.params))
        params = "inherit" if space.inherit else f"{len(space.params)} / {warm}"
        row = (_steps(b.quick_timesteps), _steps(b.full_timesteps), str(b.trials), str(b.startup_trials), str(b.repeats), params)
        table.add_row(focus, *row)
    _console().print(table)


def _range(p: ParamSpec) -> str:
    if isinstance(p, WarmParamSpec) and p.around:
        return f"×{p.around[0]:g} – ×{p.around[1]:g}"
    if p.type == "categorical":
        return ", ".join(str(choice) for choice in p.choices or ())
    return f"{p.low:g} – {p.high:g}"


def _budget(b: Budget) -> str:
    return (f"budget: quick {b.quick_timesteps:,} / full {b.full_timesteps:,} timesteps per trial, "
            f"{b.trials} trials ({b.startup_trials} random first), {b.repeats} seed repeat(s)")


def _params(params: Mapping[str, ParamSpec]):
    from rich.table import Table

    table = Table()
    for column in ("param", "type", "range / choices", "scale", "step"):
        table.add_column(column)
    for name, p in params.items():
        scale = "" if p.type == "categorical" else ("log" if p.log else "linear")
        table.add_row(name, p.type, _range(p), scale, "" if p.step is None else f"{p.step:g}")
    return table


def print_space(space: SearchSpace) -> None:
    """Description, budget and the params table of one focus, then its warm-start section.

    Warm ``around`` ranges show as factors of the run's value (``×0.3 – ×3``).
    """
    from rich.markup import escape

    console = _console()
    console.print(f"[bold]{space.focus}[/]  [dim]{escape(str(space.source or ''))}[/]")
    console.print(escape(space.description))
    console.print(_budget(space.budget))
    inherited = "params: the previous focus's space, narrowed around the best known configuration"
    console.print(inherited if space.inherit else _params(space.params))
    warm = space.warm
    if warm is None:
        return
    console.print("\n[bold]warm start[/] (trials continue the run's checkpoint)")
    console.print(escape(warm.description))
    console.print(_budget(warm.budget) if warm.budget else "budget: as above")
    if space.inherit:
        console.print("params: the previous focus's warm space, narrowed around the best known configuration")
        return
    console.print(_params(warm.params))
    console.print("[dim]Each numeric range stretches to hold the run's value, within the safety ranges.[/]")
