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
