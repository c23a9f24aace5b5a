"""Terminal rendering for training runs (rich); the JSON views print the same objects."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from drex_opt.rules.objectives import pct

console = Console(stderr=True)


class TrainProgress:
    """A live progress bar fed with the child's events (steps, SPS, grip/delivery)."""

    def __init__(self, total_steps: int, description: str = "training") -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self.task = self.progress.add_task(description, total=total_steps, info="starting")

    def __enter__(self) -> "TrainProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def update(self, event: dict) -> None:
        if event.get("event") not in ("progress", "final"):
            return
        grip = event.get("environment/perfect_grip")
        deliv = event.get("environment/perfect_deliv")
        info = f"{event.get('SPS', 0):,.0f} SPS"
        if grip is not None:
            info += f"  grip {grip:.0%}  deliv {deliv or 0:.0%}"
        self.progress.update(self.task, completed=event.get("agent_steps", 0), info=info)


def print_train_result(result) -> None:
    """One-screen view of a finished run."""
    s = result.summary
    colour = {"completed": "green", "timeout": "yellow", "stopped": "yellow"}.get(s["status"], "red")
    out = Console()
    out.print(f"[bold {colour}]{s['status']}[/] {s['run_id']}  {s.get('agent_steps', 0):,} steps in "
              f"{s.get('wall_time_s', 0):.1f} s  ->  {result.summary_path}")
    if s.get("error"):
        out.print(f"[red]error:[/] {s['error']}")
    table = Table(show_header=True, header_style="bold")
    for col in ("grip", "delivery", "end-to-end", "mean reward", "SPS"):
        table.add_column(col, justify="right")
    ext = s.get("metrics_extended") or {}
    reward = s.get("mean_reward")
    table.add_row(pct(s.get("grip_success")), pct(s.get("delivery_success")), pct(s.get("end_to_end_success")),
                  "-" if reward is None else f"{reward:.2f}", f"{ext.get('SPS') or 0:,.0f}")
    out.print(table)
    ba = s.get("behavioral_analysis") or {}
    out.print(f"behaviour: [bold]{ba.get('severity')}[/], next focus [bold]{ba.get('next_focus')}[/]")
    for line in ba.get("insights", []):
        out.print(f"  - {line}")


class LazyTrainProgress:
    """A progress bar that appears with the first event (total taken from the start event)."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar: TrainProgress | None = None

    def update(self, event: dict) -> None:
        if self.bar is None:
            if event.get("event") != "start":
                return
            self.bar = TrainProgress(int(event.get("total_timesteps") or 0), self.description)
            self.bar.__enter__()
        self.bar.update(event)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def print_export(result) -> None:
    import json

    out = Console()
    verb = "wrote" if result.written else "dry run, nothing written:"
    out.print(f"[bold]{result.study_name}[/]: {result.explanation}")
    if result.info.get("versus_baseline"):
        out.print(f"against the control: {result.info['versus_baseline']}")
    if result.resume_from:
        out.print(f"the next run continues the winner's drone: {result.resume_from}")
    out.print(f"{verb} {result.out}" + (f" and its notes {result.why}" if result.why else "")
              + (f"; notes appended to {result.notes}" if result.notes else ""))
    out.print_json(json.dumps(result.overrides))


def print_autopilot_result(result) -> None:
    """A finished iteration: the run (with its behavioural analysis), then the study and export."""
    from types import SimpleNamespace

    out = Console()
    print_train_result(SimpleNamespace(summary=result.summary, summary_path=f"{result.run_dir}/summary.json"))
    if result.study:
        states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(result.study["states"].items()))
        out.print(f"study {result.study['study_name']}: {states}")
    if result.export:
        out.print(f"next proposal: {result.export['explanation']} -> {result.export['out']}")
    for problem in result.problems:
        out.print(f"[yellow]{problem}[/]")
    c = result.compute
    if c:
        budget = f" of {c['budget']:,}" if c.get("budget") else ""
        out.print(f"agent steps: run {c['run_agent_steps']:,} + study {c['study_agent_steps']:,}; "
                  f"loop {c['loop_agent_steps']:,}{budget}")
    out.print(f"notes: {result.note}")
