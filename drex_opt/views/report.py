"""Rendering of a study report: matplotlib figures (Agg, no window), markdown, terminal table.

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, never through
pyplot: no global state, no display needed, safe next to other threads.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from rich import box
from rich.console import Console
from rich.table import Table

from drex_opt.errors import UserError
from drex_opt.jsonio import write_atomic
from drex_opt.rules.objectives import (BASELINE_ROLE, LABEL, OBJECTIVES, SCORE, VOCABULARY, describe_versus,
                                       ranked, show)
from drex_opt.search.report import Report

IMAGES = {"pareto": "pareto.png", "history": "history.png", "importance": "importance.png"}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _percent_axes(ax, x: bool = True, y: bool = True) -> None:
    if x:
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    if y:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))


def _upper(values: list[float]) -> float:
    """An axis top above the largest rate; a flat zero still gets a readable 0-5% axis."""
    return max(max(values) * 1.15, 0.05)


def _is_baseline(trial) -> bool:
    return trial.user_attrs.get("role") == BASELINE_ROLE


def pareto_figure(trials: list, pareto: set[int], names=OBJECTIVES) -> Figure:
    """The first two objectives of every completed trial (grip × delivery), coloured by the
    third (end-to-end success); one objective: its value by trial number.

    Pareto-optimal trials are large and numbered; the baseline trial is ringed in red.
    Values are each trial's own run (not repeated-seed means).
    """
    names = tuple(names)
    fig = _figure(7.0, 5.5)
    ax = fig.add_subplot()
    if len(names) >= 2:
        xs = [t.values[0] for t in trials]
        ys = [t.values[1] for t in trials]
    else:
        xs = [float(t.number) for t in trials]
        ys = [t.values[0] for t in trials]
    colour = [t.values[2] for t in trials] if len(names) >= 3 else None
    sizes = [110 if t.number in pareto else 40 for t in trials]
    edges = ["black" if t.number in pareto else "none" for t in trials]
    if colour is not None:
        top = max(max(colour), 0.01)  # all-zero end-to-end must still map to the bottom of the scale
        points = ax.scatter(xs, ys, c=colour, cmap="viridis", vmin=0.0, vmax=top, s=sizes, edgecolors=edges,
                            linewidths=1.2, zorder=3)
        fig.colorbar(points, ax=ax, label=f"{LABEL[names[2]]} success", format=PercentFormatter(1.0))
    else:
        ax.scatter(xs, ys, color="tab:blue", s=sizes, edgecolors=edges, linewidths=1.2, zorder=3)
    # Trials often tie (early budgets give many zeros): one label per point, not a pile of numbers.
    labels: dict[tuple[float, float], list[str]] = {}
    for t, x, y in zip(trials, xs, ys):
        if t.number in pareto:
            labels.setdefault((x, y), []).append(str(t.number))
    for (x, y), numbers in labels.items():
        text = ", ".join(numbers) if len(numbers) <= 6 else f"{', '.join(numbers[:5])} +{len(numbers) - 5}"
        ax.annotate(text, (x, y), xytext=(7, 7), textcoords="offset points", fontsize=9)
    base = [(x, y) for t, x, y in zip(trials, xs, ys) if _is_baseline(t)]
    if base:
        ax.scatter([x for x, _ in base], [y for _, y in base], s=320, facecolors="none",
                   edgecolors="red", linewidths=2.0, zorder=4, label="baseline")
    ax.scatter([], [], s=110, c="lightgray", edgecolors="black", label="Pareto front (numbered)")
    ax.scatter([], [], s=40, c="lightgray", label="other completed trials")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    if len(names) < 2:
        ax.set_xlabel("trial number")
        ax.set_ylabel(LABEL[names[0]])
        if names[0] != SCORE:
            _percent_axes(ax, x=False)
        ax.set_title(f"{LABEL[names[0]]} per trial (the study's one objective)")
        return fig
    ax.set_xlabel(f"{LABEL[names[0]]} success")
    ax.set_ylabel(f"{LABEL[names[1]]} success")
    xmax, ymax = _upper(xs), _upper(ys)
    ax.set_xlim(-0.03 * xmax, xmax)
    ax.set_ylim(-0.03 * ymax, ymax)
    _percent_axes(ax)
    ax.set_title(f"Pareto front: {LABEL[names[0]]} × {LABEL[names[1]]}"
                 + (f" (colour: {LABEL[names[2]]})" if len(names) >= 3 else ""))
    return fig


def history_figure(trials: list, names=OBJECTIVES) -> Figure:
    """One panel per objective: each completed trial's value by trial number, and the running best."""
    fig = _figure(8.0, 7.5)
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    ordered = sorted(trials, key=lambda t: t.number)
    numbers = [t.number for t in ordered]
    for i, (ax, name) in enumerate(zip(axes, names)):
        values = [t.values[i] for t in ordered]
        best, running = float("-inf"), []
        for v in values:
            best = max(best, v)
            running.append(best)
        ax.scatter(numbers, values, s=25, color="tab:blue", label="trial", zorder=3)
        ax.step(numbers, running, where="post", color="tab:orange", label="best so far")
        base = [t for t in ordered if _is_baseline(t)]
        if base:
            ax.scatter([t.number for t in base], [t.values[i] for t in base], s=120, facecolors="none",
                       edgecolors="red", linewidths=1.5, label="baseline", zorder=4)
        ax.set_ylabel(LABEL[name])
        if name != SCORE:
            top = _upper(values)
            ax.set_ylim(-0.03 * top, top)
            _percent_axes(ax, x=False)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    axes[-1].set_xlabel("trial number")
    axes[-1].xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle("Objectives per trial (completed trials)")
    return fig


def importance_figure(importances: dict) -> Figure:
    """Horizontal bars of parameter importance, one panel per objective that has them."""
    names = [n for n in VOCABULARY if n in importances]
    params = sorted({p for imp in importances.values() for p in imp},
                    key=lambda p: sum(importances[n].get(p, 0.0) for n in names))
    fig = _figure(4.0 * len(names) + 2.5, 0.45 * len(params) + 1.8)
    axes = fig.subplots(1, len(names), sharey=True, squeeze=False)[0]
    for ax, name in zip(axes, names):
        ax.barh(params, [importances[name].get(p, 0.0) for p in params], color="tab:green")
        ax.set_xlim(0, 1)
        ax.set_title(LABEL[name])
        ax.set_xlabel("importance (share)")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Parameter importance per objective")
    return fig


# ---------------------------------------------------------------- text
def _objective(top, name: str) -> str:
    text = show(name, top.means[name])
    if top.stdev:
        text += f" ± {show(name, top.stdev[name])}"
    return text


def _value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _params_line(params: dict) -> str:
    """Short names (``ent_coef``, not ``train.ent_coef``), one per line: the table stays narrow."""
    return "\n".join(f"{k.split('.', 1)[-1]}={_value(v)}" for k, v in params.items()) or "-"


def markdown(report: Report, images: dict) -> str:
    """``report.md``: the study, the trials by state, the top trials with their analyses, the images.

    Args:
        images: figure key -> file name relative to the report (only those written).
    """
    states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(report.states.items()))
    total = sum(report.states.values())
    lines = [f"# Study report: {report.study_name}", "",
             f"- storage: `{report.storage}`",
             f"- focus: **{report.focus or '-'}**"]
    if report.timesteps:
        lines.append(f"- budget: {report.timesteps:,} agent steps per trial, "
                     f"{report.trials_planned or '-'} trials planned by the first command")
    lines += [f"- trials: {total} ({states})",
              f"- Pareto front: trials {', '.join(map(str, report.pareto)) or '-'}"]
    if report.warm_start:
        lines.append(f"- every trial continued the drone in `{report.warm_start}`; the baseline trial continued it unchanged")
    if report.warm_start_declined:
        lines.append(f"- {report.warm_start_declined}")
    versus = describe_versus(report.versus_baseline, bool(report.warm_start))
    if versus:
        lines.append(f"- against the control: {versus}")
    if report.objectives_note:
        lines.append(f"- objectives: {report.objectives_note}")
    lines.append("")
    if report.theory:
        lines += ["## Theory", ""] + [f"> {line}" if line.strip() else ">" for line in report.theory.splitlines()]
        lines.append("")
    names = tuple(report.objectives or OBJECTIVES)
    front = (f"Pareto front: {LABEL[names[0]]} × {LABEL[names[1]]}" if len(names) >= 2
             else f"{LABEL[names[0]]} per trial")
    lines += ["## Pareto front", "", f"![{front}]({images['pareto']})", "",
              "## Top trials", "", f"By {', then '.join(LABEL[n] for n in ranked(names))}; repeated-seed means "
              "± stdev where the study re-trained a trial with new seeds.", "",
              "| trial | " + " | ".join(LABEL[n] for n in names) + " | seeds | severity | next focus |",
              "|---:|" + "---:|" * len(names) + "---:|---|---|"]
    for top in report.top:
        a = top.behavioral_analysis
        label = f"{top.number}{' (baseline)' if top.baseline else ''}"
        lines.append(f"| {label} | " + " | ".join(_objective(top, n) for n in names)
                     + f" | {top.seeds} | {a.get('severity') or '-'} | {a.get('next_focus') or '-'} |")
    for top in report.top:
        a = top.behavioral_analysis
        lines += ["", f"### Trial {top.number}{' (baseline)' if top.baseline else ''}", "",
                  "- objectives: " + ", ".join(f"{LABEL[n]} {_objective(top, n)}" for n in names),
                  f"- behaviour: severity **{a.get('severity') or '-'}**, next focus **{a.get('next_focus') or '-'}**"]
        lines += [f"  - {insight}" for insight in a.get("insights") or []]
        if top.params:
            lines += ["- params:"] + [f"  - `{k}` = {_value(v)}" for k, v in top.params.items()]
        else:
            lines.append("- params: none searched")
        if top.run_dir:
            lines.append(f"- run folder: `{top.run_dir}`")
    lines += ["", "## Objectives per trial", "", f"![Objectives per trial]({images['history']})", "",
              "## Parameter importance", ""]
    if "importance" in images:
        lines += [f"![Parameter importance]({images['importance']})", ""]
        for name, imp in report.importances.items():
            by_weight = sorted(imp.items(), key=lambda kv: kv[1], reverse=True)
            lines.append(f"- {LABEL[name]}: " + ", ".join(f"`{k}` {v:.2f}" for k, v in by_weight))
        lines.append("")
    if report.importance_note:
        lines += [report.importance_note]
    return "\n".join(lines).rstrip() + "\n"


def write_files(report: Report) -> dict:
    """Draw the pictures and ``report.md`` into ``report.out_dir``; fills ``report.files``.

    Each file is written to a temporary name and renamed: an interrupted report leaves
    the previous files, never half a picture.

    Raises:
        UserError: an unwritable output folder.
    """
    out_dir = Path(report.out_dir)
    completed = report.trials
    names = tuple(report.objectives or OBJECTIVES)
    figures = {"pareto": pareto_figure(completed, set(report.pareto), names), "history": history_figure(completed, names)}
    if report.importances:
        figures["importance"] = importance_figure(report.importances)
    try:
        for key, fig in figures.items():
            path = out_dir / IMAGES[key]
            write_atomic(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=110))
            report.files[key] = str(path)
        md = out_dir / "report.md"
        write_atomic(md, markdown(report, {k: IMAGES[k] for k in figures}))
        report.files["report"] = str(md)
    except OSError as exc:
        raise UserError(f"cannot write the report to {out_dir}: {exc.strerror or exc}") from None
    return report.files


def print_report(report: Report) -> None:
    """The top-trials table and the files written."""
    out = Console()
    states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(report.states.items()))
    out.print(f"[bold]{report.study_name}[/] ({report.storage}): focus {report.focus or '-'}; trials: {states}")
    names = tuple(report.objectives or OBJECTIVES)
    table = Table(title=f"Top trials ({', then '.join(LABEL[n] for n in ranked(names))})", header_style="bold",
                  box=box.SIMPLE_HEAD)
    table.add_column("trial", justify="right")
    for name in names:
        table.add_column({"delivery_success": "deliv.", "end_to_end_success": "e2e"}.get(name, LABEL[name]),
                         justify="right", no_wrap=True)
    table.add_column("behaviour", overflow="fold")
    table.add_column("params", no_wrap=True)
    for top in report.top:
        a = top.behavioral_analysis
        trial = f"{top.number}" + ("\nbaseline" if top.baseline else "") + (f"\n{top.seeds} seeds" if top.seeds > 1 else "")
        cells = [show(n, top.means[n]) + (f"\n±{show(n, top.stdev[n])}" if top.stdev else "") for n in names]
        table.add_row(trial, *cells, f"{a.get('severity') or '-'} →\n{a.get('next_focus') or '-'}",
                      _params_line(top.params))
    out.print(table)
    versus = describe_versus(report.versus_baseline, bool(report.warm_start))
    if versus:
        out.print(f"against the control: {versus}")
    if report.importance_note:
        out.print(report.importance_note)
    for key, path in report.files.items():
        out.print(f"wrote {key}: {path}")
