"""The optimised drone_pp steps exactly like the straightforward reference implementation.

``drone_pp_reference.py`` (beside this file) is the env as first written. The optimised env's
two steps (compiled loops, the default, and NumPy operations) are each checked against it. Both are driven
with the same actions, half of the drones by a pilot that grips and delivers (so every phase,
respawn and new task happens) and half by noise (crashes, collisions); observations,
rewards, ends and internal state must match bit for bit, reports to rounding. The batched
form (several sub-envs in one object) must match separate reference instances seeded
``seed + g``, as PufferLib's Serial backend builds them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from drex_opt.envs import drone_pp as D

_spec = importlib.util.spec_from_file_location("drone_pp_reference", Path(__file__).with_name("drone_pp_reference.py"))
R = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(R)


def _pilot(waypoint, pos, carrying):
    v = 1.2 * (waypoint - pos)
    v[:, 2] += 0.6 * carrying
    v[:, 2] = np.maximum(v[:, 2], -0.8)
    return np.clip(v / D.MAX_VEL, -1, 1).astype(np.float32)


def _actions(rng, waypoint, pos, carrying):
    a = _pilot(waypoint, pos, carrying)
    noisy = rng.random(len(a)) < 0.5
    a[noisy] = rng.uniform(-1, 1, (int(noisy.sum()), 3)).astype(np.float32)
    return a


def _same_reports(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-9), k


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize("groups,num_envs,num_drones", [(1, 2, 8), (4, 2, 8), (3, 1, 1)])
def test_matches_the_reference_for_1000_steps(groups, num_envs, num_drones, compiled):
    seed = 11
    env = D.DronePP(num_envs=num_envs, num_drones=num_drones, report_interval=16, seed=seed, groups=groups,
                    compiled=compiled)
    assert env.compiled is compiled
    refs = [R.DronePP(num_envs=num_envs, num_drones=num_drones, report_interval=16, seed=seed + g)
            for g in range(groups)]
    obs, _ = env.reset(seed)
    ref_obs = np.concatenate([r.reset(seed + g)[0] for g, r in enumerate(refs)])
    assert np.array_equal(obs, ref_obs)
    rng = np.random.default_rng(5)
    grips = delivs = ends = 0
    for _ in range(1000):
        state = [np.concatenate([getattr(r, k) for r in refs]) for k in ("waypoint", "pos", "carrying")]
        act = _actions(rng, *state)
        o, rew, term, trunc, infos = env.step(act)
        ref_infos = []
        chunks = np.split(act, groups)
        outs = [r.step(a) for r, a in zip(refs, chunks)]
        for out in outs:
            ref_infos += out[4]
        for i, field in enumerate((o, rew, term, trunc)):
            ref = np.concatenate([out[i] for out in outs])
            assert field.dtype == ref.dtype
            assert np.array_equal(field, ref), ("obs", "reward", "terminal", "truncation")[i]
        for name in ("pos", "vel", "thrust", "box", "drop", "box_mass", "waypoint", "prev_dist", "carrying",
                     "hovered", "ep_len", "ep_return", "ep_grips", "ep_delivs", "ep_flags", "nearest"):
            assert np.array_equal(getattr(env, name), np.concatenate([getattr(r, name) for r in refs])), name
        _same_reports(infos, ref_infos)
        grips += int(sum(r.ep_grips.sum() for r in refs))
        delivs += len(ref_infos) and int(sum(x["delivered"] for x in ref_infos))
        ends += int(term.sum() + trunc.sum())
    assert ends > 0 and grips > 0
    if num_drones > 1:
        assert delivs > 0  # the pilot delivers: the new-task path ran


def test_training_build_steps_like_serial_over_separate_envs():
    """``train.build`` batches the vec.num_envs sub-envs into one env; PufferLib's Serial
    backend over separate instances (the layout before) gives the same agents, seeds,
    observations, rewards, ends and reports."""
    import pufferlib.vector

    from drex_opt.rules import config
    from drex_opt.run import train

    cfg = config.resolve("quick", None, {"train": {"seed": 3}})
    vecenv, _, notes = train.build(cfg, "drone_pp", seed=3)
    assert notes == [] and isinstance(vecenv, D.DronePP) and vecenv.groups == cfg["vec"]["num_envs"]
    serial = pufferlib.vector.make(
        D.make, backend=pufferlib.vector.Serial, num_envs=cfg["vec"]["num_envs"], num_workers=1,
        env_kwargs={"num_envs": cfg["env"]["num_envs"], "num_drones": cfg["env"]["num_drones"]}, seed=3)
    assert vecenv.num_agents == serial.num_agents
    for v in (vecenv, serial):
        v.async_reset(3)
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = vecenv.recv()
        b = serial.recv()
        for x, y in zip(a[:4], b[:4]):
            assert np.array_equal(x, y)
        _same_reports(a[4], b[4])
        act = rng.uniform(-1, 1, (vecenv.num_agents, 3)).astype(np.float32)
        vecenv.send(act)
        serial.send(act)
