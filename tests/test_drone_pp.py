"""drone_pp: spaces, seeding, physics, every phase transition, collisions, bounds, solvability."""

from __future__ import annotations

import numpy as np
import pytest

from drex_opt.envs import drone_pp as D


def make(num_envs=1, num_drones=1, seed=0):
    env = D.DronePP(num_envs=num_envs, num_drones=num_drones, report_interval=1, seed=seed)
    env.reset(seed)
    return env


def place(env, i, pos, vel=(0.0, 0.0, 0.0)):
    """Put drone ``i`` at ``pos`` with ``vel`` and thrust in hover equilibrium."""
    env.pos[i] = pos
    env.vel[i] = vel
    env.thrust[i] = (0.0, 0.0, D.DRONE_MASS * D.GRAVITY)
    env._set_waypoint(np.array([i]))


def hold(env, i=0, vz=0.0):
    """An action that asks drone ``i`` for zero horizontal and ``vz`` vertical speed."""
    a = np.zeros((env.num_agents, 3), np.float32)
    a[i, 2] = vz / D.MAX_VEL[2]
    return a


def scripted(env, integ):
    """A hand-written pilot: fly to the waypoint, with integral action against box sag."""
    to_wp = env.waypoint - env.pos
    v = 1.2 * to_wp
    integ += np.where(env.carrying, to_wp[:, 2], 0.0) * D.DT
    integ *= env.carrying
    np.clip(integ, -0.3, 0.6, out=integ)
    v[:, 2] += 1.5 * integ + 0.6 * env.carrying
    v[:, 2] = np.maximum(v[:, 2], -0.8)
    return np.clip(v / D.MAX_VEL, -1, 1).astype(np.float32)


def test_spaces_and_dtypes():
    env = make(num_envs=3, num_drones=5)
    assert env.num_agents == 15
    assert env.single_observation_space.shape == (D.OBS_SIZE,)
    assert env.single_action_space.shape == (3,)
    assert env.single_action_space.low.min() == -1.0 and env.single_action_space.high.max() == 1.0
    obs, infos = env.reset(1)
    assert obs.shape == (15, D.OBS_SIZE) and obs.dtype == np.float32
    assert infos == []
    obs, rew, term, trunc, infos = env.step(np.zeros((15, 3), np.float32))
    assert rew.shape == (15,) and rew.dtype == np.float32
    assert term.shape == (15,) and trunc.shape == (15,)
    assert np.isfinite(obs).all()


def test_invalid_topology_is_refused():
    with pytest.raises(ValueError):
        D.DronePP(num_envs=0, num_drones=4)


def _rollout(seed, steps=200):
    env = make(num_envs=2, num_drones=4, seed=seed)
    rng = np.random.default_rng(123)
    trace = []
    for _ in range(steps):
        obs, rew, *_ = env.step(rng.uniform(-1, 1, (8, 3)).astype(np.float32))
        trace.append((obs.copy(), rew.copy()))
    return trace


def test_seeding_is_deterministic():
    a, b, c = _rollout(7), _rollout(7), _rollout(8)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c))


def test_gravity_pulls_a_drone_without_thrust_down():
    env = make()
    place(env, 0, (0.0, 0.0, 5.0))
    env.thrust[0] = 0.0
    a = np.array([[0.0, 0.0, -1.0]], np.float32)  # full descent command: controller cuts thrust
    env.step(a)
    assert env.vel[0, 2] < -0.2


def test_hover_command_holds_altitude_when_empty():
    env = make()
    place(env, 0, (0.0, 0.0, 5.0))
    env.box[0] = (8.0, 8.0, D.BOX_TOP)
    for _ in range(40):
        env.step(hold(env))
    assert abs(env.pos[0, 2] - 5.0) < 0.05


def test_carrying_a_box_makes_the_drone_sag():
    """Same command, same state: the carrying drone ends lower (extra mass, same controller)."""
    env = make(num_drones=2, num_envs=1)
    for i, x in enumerate((-5.0, 5.0)):
        place(env, i, (x, 0.0, 5.0))
    env.carrying[1] = True
    env.box_mass[1] = 0.3
    env.drop[:] = (0.0, 8.0, 0.0)
    for _ in range(20):
        env.step(np.zeros((2, 3), np.float32))
    assert env.pos[1, 2] < env.pos[0, 2] - 0.1


def test_actuator_lag_delays_thrust():
    env = make()
    place(env, 0, (0.0, 0.0, 5.0))
    env.step(np.array([[1.0, 0.0, 0.0]], np.float32))
    # the commanded horizontal force is the tilt limit; one step of lag delivers a third of it
    assert 0.0 < env.thrust[0, 0] < D.MAX_THRUST_XY * 0.5


def test_phase_transitions_pickup_to_delivery():
    env = make()
    box = np.array([2.0, -3.0, D.BOX_TOP], np.float32)
    env.box[0] = box
    env.drop[0] = (-4.0, 4.0, 0.0)
    # at the hover point above the box, slow -> hovered, waypoint moves down to the grip point
    place(env, 0, box + (0.0, 0.0, D.HOVER_HEIGHT))
    _, rew, *_ = env.step(hold(env))
    assert env.hovered[0] and not env.carrying[0]
    assert rew[0] >= D.R_HOVER * 0.9
    assert env.waypoint[0, 2] == pytest.approx(D.GRIP_POINT_Z)
    assert env.ep_flags[0, D._F["ho_pickup"]] and env.ep_flags[0, D._F["to_pickup"]]
    # close above the box, slowly descending -> grip
    place(env, 0, box + (0.05, 0.0, 0.35), vel=(0.0, 0.0, -0.3))
    env.hovered[0] = True
    _, rew, *_ = env.step(hold(env, vz=-0.3))
    assert env.carrying[0] and not env.hovered[0]
    assert env.ep_grips[0] == 1
    assert rew[0] >= D.R_GRIP * 0.9
    assert env.waypoint[0, 2] == pytest.approx(D.DROP_HOVER_Z)
    # hover over the drop zone with the box
    place(env, 0, (-4.0, 4.0, D.DROP_HOVER_Z))
    env.step(hold(env))
    assert env.hovered[0] and env.carrying[0]
    assert env.ep_flags[0, D._F["ho_drop"]] and env.ep_flags[0, D._F["to_drop"]]
    # low and slow above the drop zone -> release = delivered, then a new box appears
    place(env, 0, (-4.0, 4.0, 1.2), vel=(0.0, 0.0, -0.3))
    old_box = env.box[0].copy()
    _, rew, *_ = env.step(hold(env, vz=-0.3))
    assert not env.carrying[0]
    assert env.ep_delivs[0] == 1
    assert rew[0] >= D.R_DELIVER * 0.9
    assert not np.array_equal(env.box[0], old_box)


def test_no_grip_without_hovering_first():
    env = make()
    box = np.array([0.0, 0.0, D.BOX_TOP], np.float32)
    env.box[0] = box
    place(env, 0, box + (0.0, 0.0, 0.35), vel=(0.0, 0.0, -0.3))
    env.step(hold(env, vz=-0.3))
    assert not env.carrying[0]


def test_no_grip_when_too_fast():
    env = make()
    box = np.array([0.0, 0.0, D.BOX_TOP], np.float32)
    env.box[0] = box
    place(env, 0, box + (0.0, 0.0, 0.45), vel=(1.5, 0.0, -0.3))
    env.hovered[0] = True
    env.step(np.array([[1.5 / D.MAX_VEL[0], 0.0, -0.3 / D.MAX_VEL[2]]], np.float32))
    assert not env.carrying[0]


def test_collision_between_drones_of_one_arena():
    env = make(num_envs=2, num_drones=2)
    place(env, 0, (0.0, 0.0, 4.0))
    place(env, 1, (0.2, 0.0, 4.0))
    place(env, 2, (0.0, 0.0, 4.0))  # arena 2: same spot as drone 0, but another arena
    place(env, 3, (5.0, 5.0, 4.0))
    _, rew, *_ = env.step(np.zeros((4, 3), np.float32))
    assert env.collided[0] and env.collided[1]
    assert not env.collided[2] and not env.collided[3]
    assert env.ep_collisions[0] == 1 and env.ep_collisions[2] == 0
    assert np.allclose(env.nearest[0], env.pos[1] - env.pos[0])


def test_leaving_the_arena_ends_the_episode_and_is_logged():
    env = make()
    place(env, 0, (D.HALF_XY - 0.01, 0.0, 4.0), vel=(3.0, 0.0, 0.0))
    _, rew, term, trunc, infos = env.step(np.array([[1.0, 0.0, 0.0]], np.float32))
    assert term[0] and not trunc[0]
    assert rew[0] == pytest.approx(-1.0, abs=0.05)
    assert infos and infos[0]["oob"] == 1.0 and infos[0]["n"] == 1.0
    assert abs(env.pos[0, 0]) <= D.SPAWN_XY  # respawned


def test_hitting_the_floor_ends_the_episode():
    env = make()
    place(env, 0, (0.0, 0.0, 0.25), vel=(0.0, 0.0, -2.0))
    env.box[0] = (6.0, 6.0, D.BOX_TOP)
    _, _, term, _, infos = env.step(np.array([[0.0, 0.0, -1.0]], np.float32))
    assert term[0]
    assert infos[0]["oob"] == 1.0


def test_horizon_truncates_and_reports_every_statistic():
    env = make()
    place(env, 0, (0.0, 0.0, 4.0))
    env.box[0] = (6.0, 6.0, D.BOX_TOP)
    infos = []
    for _ in range(D.HORIZON):
        _, _, term, trunc, info = env.step(hold(env))
        infos += info
        assert not term[0]
    assert trunc[0]
    assert set(infos[-1]) == set(D.STAT_KEYS) | {"n"}
    assert infos[-1]["episode_length"] == D.HORIZON
    assert infos[-1]["oob"] == 0.0 and infos[-1]["perfect_grip"] == 0.0


def test_scripted_pilot_delivers():
    """Solvable: a hand-written pilot grips, carries and delivers in nearly every episode."""
    env = D.DronePP(num_envs=4, num_drones=16, seed=3)
    env.reset(3)
    integ = np.zeros(env.num_agents)
    reports = []
    for _ in range(3 * D.HORIZON):
        _, _, term, trunc, infos = env.step(scripted(env, integ))
        integ[term | trunc] = 0
        reports += infos
    n = sum(r["n"] for r in reports)
    mean = {k: sum(r[k] * r["n"] for r in reports) / n for k in D.STAT_KEYS}
    assert n >= 64
    assert mean["perfect_grip"] > 0.95
    assert mean["perfect_deliv"] > 0.9
    assert mean["perfect_now"] > 0.9
    assert mean["delivered"] > 1.5  # several deliveries per episode
    assert mean["oob"] < 0.05


def test_random_actions_rarely_succeed():
    env = D.DronePP(num_envs=4, num_drones=16, seed=1)
    env.reset(1)
    rng = np.random.default_rng(0)
    reports = []
    for _ in range(2 * D.HORIZON):
        reports += env.step(rng.uniform(-1, 1, (env.num_agents, 3)).astype(np.float32))[4]
    n = sum(r["n"] for r in reports)
    assert sum(r["perfect_deliv"] * r["n"] for r in reports) / n < 0.05
