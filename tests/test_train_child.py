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


def test_final_window_reaches_back_to_one_episode_per_agent(monkeypatch):
    """A drone that no longer crashes ends its episodes together: a short run's last stretch
    may hold no episode end, or only those of the few drones that crashed. The objectives
    must describe the drone, not its failures."""
    from drex_opt.run import train

    monkeypatch.setattr(train, "emit", lambda *a, **k: None)
    burst = {"environment/perfect_now": 0.9, "environment/n": 512}  # every drone's episode ends
    crashed = {"environment/perfect_now": 0.0, "environment/n": 8}  # a few crashes afterwards
    quiet = {"SPS": 1.0}
    logs = [quiet] * 4 + [burst] + [quiet] * 4 + [crashed]  # 1,000 steps a report, 10,000 in all
    _, _, final = train._train(_ScriptedTrainer(logs), 10_000, seed=1, agents=512)
    assert final.weight == 520 and final.means()["environment/perfect_now"] == pytest.approx(0.9 * 512 / 520)
    # No episode at all in the last 15%: the burst alone.
    _, _, final = train._train(_ScriptedTrainer(logs[:9] + [quiet]), 10_000, seed=1, agents=512)
    assert final.means() == burst
    # Enough episodes in the last 15%: those alone, the older burst left out.
    many = {"environment/perfect_now": 0.5, "environment/n": 600}
    _, _, final = train._train(_ScriptedTrainer(logs[:9] + [many]), 10_000, seed=1, agents=512)
    assert final.means() == many


class _LaggingLossesTrainer(_ScriptedTrainer):
    """PuffeRL's own order: a log carries the losses of the previous log; the epoch's losses
    are kept on the trainer only after it logged."""

    def __init__(self, logs: list[dict | None], losses: list[dict]) -> None:
        super().__init__(logs)
        self.per_epoch, self.losses = losses, {}

    def train(self) -> dict | None:
        logs = super().train()
        if logs is not None:
            logs = {**logs, **{f"losses/{k}": v for k, v in self.losses.items()}}
            self.losses = self.per_epoch[self.epoch - 1]
        return logs


def test_the_last_epochs_losses_reach_the_summary_even_when_the_run_logged_once(monkeypatch):
    """A run short enough for one log (PuffeRL logs at most every 0.25 s) would report no
    losses: PuffeRL's only log carries the losses of a previous log, which does not exist."""
    from drex_opt.run import train

    monkeypatch.setattr(train, "emit", lambda *a, **k: None)
    last, _, _ = train._train(_LaggingLossesTrainer([None, {"SPS": 1.0}], [{"value_loss": 0.5}, {"value_loss": 0.25}]),
                              2_000, seed=1)
    assert last["losses/value_loss"] == 0.25 and last["SPS"] == 1.0
    with pytest.raises(train.NaNLosses):
        train._train(_LaggingLossesTrainer([None, {"SPS": 1.0}], [{}, {"value_loss": float("nan")}]), 2_000, seed=1)


def test_a_nan_loss_in_any_log_fails_the_run_naming_it_while_a_nan_statistic_does_not(monkeypatch):
    from drex_opt.run import train

    monkeypatch.setattr(train, "emit", lambda *a, **k: None)
    nan = float("nan")
    logs = [{"SPS": 1.0, "losses/policy_loss": 0.1}, {"SPS": 1.0, "losses/entropy": nan}, {"SPS": 1.0}]
    with pytest.raises(train.NaNLosses, match="losses/entropy"):
        train._train(_ScriptedTrainer(logs), 3_000, seed=1)
    # An environment statistic with no episode behind it can be NaN; that is no divergence.
    last, _, _ = train._train(_ScriptedTrainer([{"SPS": 1.0, "environment/score": nan}] * 3), 3_000, seed=1)
    assert last["SPS"] == 1.0
