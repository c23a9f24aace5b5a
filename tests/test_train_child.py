"""The training child trusts nothing it is given: batch sizes must match what it steps."""

from __future__ import annotations

import pytest

from drex_opt.rules import config, safety
from drex_opt.run import runner


@pytest.mark.slow
def test_mismatched_batch_sizes_fail_the_run_instead_of_being_repaired(tmp_path):
    cfg = config.load_baseline("quick")
    cfg["env"]["num_drones"] //= 2  # the topology changes, the sizes do not follow
    cfg["train"]["total_timesteps"] = 50_000
    result = runner.run_training(cfg, tmp_path / "run")
    summary = result.summary
    assert summary["status"] == "failed"
    derived = safety.derive_batch_sizes(cfg)["batch_size"]
    assert "batch sizes" in summary["error"] and f"= {derived}" in summary["error"]
    assert summary["agent_steps"] == 0, "nothing is trained on sizes the config did not say"


class _ScriptedTrainer:
    """PuffeRL's loop surface, replaying one log dict per batch of 1,000 steps."""

    def __init__(self, logs: list[dict | None]) -> None:
        self.logs, self.global_step, self.epoch = logs, 0, 0

    def evaluate(self) -> None:
        self.global_step += 1_000

    def train(self) -> dict | None:
        self.epoch += 1
        return self.logs[self.epoch - 1]


def test_final_window_falls_back_to_the_last_report_with_episode_statistics(monkeypatch):
    """A drone that no longer crashes ends its episodes together: a short run's last stretch
    may hold no episode end, and its objectives must still come from its own episodes."""
    from drex_opt.run import train

    monkeypatch.setattr(train, "emit", lambda *a, **k: None)
    episodes = {"environment/perfect_grip": 0.9, "environment/perfect_now": 0.7, "environment/n": 512}
    logs = [{"SPS": 1.0}] * 4 + [episodes] + [{"SPS": 1.0}] * 5  # episodes end at 5k of 10k steps
    _, _, final = train._train(_ScriptedTrainer(logs), 10_000, seed=1)
    assert final.means() == {"environment/perfect_grip": 0.9, "environment/perfect_now": 0.7, "environment/n": 512}
    # When episodes do end inside the last 15%, those are the ones that count.
    late = {"environment/perfect_grip": 0.2, "environment/perfect_now": 0.1, "environment/n": 10}
    _, _, final = train._train(_ScriptedTrainer(logs[:9] + [late]), 10_000, seed=1)
    assert final.means()["environment/perfect_grip"] == 0.2
