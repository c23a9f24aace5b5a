"""The live state of a running study, shared by its worker threads and read by a display."""

from __future__ import annotations

import threading
from typing import Callable

from drex_opt.rules.objectives import show
from drex_opt.search.planning import StudyPlan


class StudyMonitor:
    """Thread-safe live state of a running study, read by the progress display."""

    def __init__(self, plan: StudyPlan, on_line: Callable[[str], None] | None = None) -> None:
        """``on_line`` receives one plain line per finished trial (logs, non-terminal output)."""
        self.plan = plan
        self.on_line = on_line
        self.lock = threading.Lock()
        self.counts = {"COMPLETE": 0, "FAIL": 0, "PRUNED": 0}
        self.best = [None] * len(plan.objectives)
        self.running: dict[int, dict] = {}
        self.messages: list[str] = []
        self.phase = "search"

    def started(self, number: int) -> None:
        with self.lock:
            self.running[number] = {"steps": 0, "sps": 0.0}

    def progress(self, number: int, event: dict) -> None:
        with self.lock:
            if number in self.running:
                self.running[number] = {"steps": event.get("agent_steps", 0), "sps": event.get("SPS", 0.0),
                                        "grip": event.get("environment/perfect_grip")}

    def finished(self, number: int, state: str, values=None, reason: str | None = None) -> None:
        with self.lock:
            self.running.pop(number, None)
            self.counts[state] = self.counts.get(state, 0) + 1
            if values:
                self.best = [v if b is None else max(b, v) for b, v in zip(self.best, values)]
            line = f"trial {number}: {state.lower()}"
            if values:
                line += " " + " ".join(f"{n.split('_')[0]} {show(n, v)}" for n, v in zip(self.plan.objectives, values))
            if reason:
                line += f" ({reason})"
            self.messages.append(line)
        if self.on_line is not None:
            self.on_line(line)

    def snapshot(self) -> dict:
        with self.lock:
            return {"counts": dict(self.counts), "best": list(self.best), "running": dict(self.running),
                    "messages": list(self.messages[-6:]), "phase": self.phase}
