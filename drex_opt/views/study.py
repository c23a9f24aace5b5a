"""Terminal rendering of a running and a finished study (rich)."""

from __future__ import annotations

import threading

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from drex_opt.rules.objectives import LABEL, OBJECTIVES, describe_versus, pct, ranked, show
from drex_opt.search.monitor import StudyMonitor
from drex_opt.search.study import StudyResult


class StudyDisplay:
    """A live panel: trials done / failed / pruned, best per objective, running trials.

    When the output is not a terminal (a log file, a pipe) a live panel would keep only
    its last frame, so the display prints one plain line per finished trial instead.
    """

    def __init__(self, monitor: StudyMonitor, console: Console | None = None) -> None:
        self.monitor = monitor
        self.console = console or Console(stderr=True)
        self.live = Live(self.render(), console=self.console, refresh_per_second=4, transient=False) \
            if self.console.is_terminal else None
        self._stop = threading.Event()

    def render(self):
        snap = self.monitor.snapshot()
        plan = self.monitor.plan
        c = snap["counts"]
        head = Text.assemble(
            (f"{plan.study_name}", "bold"), f"  focus {plan.focus}  {plan.timesteps:,} steps/trial  ",
            (f"done {c.get('COMPLETE', 0)}", "green"), "  ", (f"failed {c.get('FAIL', 0)}", "red"), "  ",
            (f"pruned {c.get('PRUNED', 0)}", "yellow"), f"  of {plan.trials}  [{snap['phase']}]")
        best = Text("best  " + "  ".join(f"{n.split('_')[0]} {show(n, v)}" for n, v in zip(plan.objectives, snap["best"])))
        table = Table(show_header=True, header_style="bold", box=None)
        for col in ("trial", "steps", "SPS", "grip"):
            table.add_column(col, justify="right")
        for number, r in sorted(snap["running"].items()):
            table.add_row(str(number), f"{r.get('steps', 0):,}/{plan.timesteps:,}", f"{r.get('sps', 0):,.0f}",
                          pct(r.get("grip")))
        return Group(head, best, table, *[Text(m, style="dim") for m in snap["messages"]])

    def _plain(self, line: str) -> None:
        print(line, file=self.console.file, flush=True)

    def __enter__(self):
        if self.live is None:
            self.monitor.on_line = self._plain
            return self
        self.live.__enter__()

        def refresh():
            while not self._stop.wait(0.5):
                self.live.update(self.render())

        self._thread = threading.Thread(target=refresh, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.live is None:
            self.monitor.on_line = None
            return
        self._stop.set()
        self.live.update(self.render())
        self.live.__exit__(*exc)


def print_result(result: StudyResult) -> None:
    out = Console()
    r = result
    out.print()
    states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(r.states.items()))
    out.print(f"[bold]{r.study_name}[/] ({r.storage}): {r.trials_run} trial(s) this run; study: {states}")
    if r.interrupted:
        out.print("[yellow]interrupted[/]: running trials were stopped and marked failed; run the same command to resume")
    if r.stale_failed:
        out.print(f"failed stale trials of dead workers: {r.stale_failed}")
    table = Table(title="Pareto front", header_style="bold")
    table.add_column("trial", justify="right")
    names = r.objectives or list(OBJECTIVES)
    for name in names:
        table.add_column(name.replace("_success", ""), justify="right")
    table.add_column("params")
    for p in r.pareto:
        label = f"{p['number']}{(' (unchanged)' if r.warm_start else ' (baseline)') if p['baseline'] else ''}"
        params = ", ".join(f"{k.split('.', 1)[1]}={v:.4g}" if isinstance(v, float) else f"{k.split('.', 1)[1]}={v}"
                           for k, v in p["params"].items())
        table.add_row(label, *[show(n, p["means"][n]) for n in names], params)
    out.print(table)
    if r.objectives_note:
        out.print(f"objectives: {r.objectives_note}")
    if r.warm_start:
        out.print(f"every trial continued the drone in {r.warm_start}; trial 0 continued it unchanged")
    if r.warm_start_declined:
        out.print(r.warm_start_declined)
    sentence = describe_versus(r.versus_baseline, bool(r.warm_start))
    if sentence:
        out.print(sentence)
    if r.best:
        order = ", then ".join(LABEL[n] for n in ranked(names))
        out.print(f"best ({order}): trial {r.best['number']}; "
                  f"export it with [bold]drex-opt export --study-name {r.study_name}[/]")
