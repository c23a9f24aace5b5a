"""Reference drone_pp for tests/test_drone_pp_equivalence.py: the straightforward implementation.

The env as first written (one array expression per rule, no buffers), kept so the optimised
``drex_opt.envs.drone_pp`` (its NumPy step and its compiled step) can be checked against it
step by step. One change since: the nearest-neighbour search squares coordinate differences
instead of expanding |a - b|^2 = |a|^2 + |b|^2 - 2 a.b through a matrix product, whose sum
order belongs to the BLAS library and which loses precision to cancellation far from the
origin; the direct form is exact to one rounding per operation and can be computed the same
way by compiled code.

drone_pp: the built-in drone pick-and-place environment (grip -> carry -> deliver).

A vectorised NumPy ``pufferlib.PufferEnv``: ``num_envs`` arenas x ``num_drones`` drones,
every step is a handful of array operations over all drones at once (no per-drone loop).

Control level. PufferLib's ``drone_delivery`` takes four motor RPMs and needs hundreds of
millions of steps to learn to fly at all; a CPU budget of a few million steps cannot
afford that. Each drone here carries an onboard *velocity controller*, as real delivery
drones do: the policy outputs a desired velocity in [-1, 1]^3 (scaled to
``MAX_VEL``), the controller turns the velocity error into a thrust command tuned for the
*empty* drone, and the physics does the rest:

- gravity, thrust bounded by a thrust-to-weight ratio and a tilt limit,
- first-order actuator lag on the thrust (motor spin-up),
- linear air drag.

Carrying a box adds its mass (the controller, tuned for the empty drone, now sags and
responds slower) and extra drag, so carrying is a different control problem from empty
flight, as in ``drone_delivery``.

Task, per drone, mirroring ``drone_delivery``: approach the box -> hover above it ->
descend slowly -> grip (automatic when close, slow and descending after a hover) ->
carry to the drop zone -> hover above it -> descend -> release = delivered, then a new box
and drop zone appear. Drones of one arena can collide. Leaving the arena or hitting the
floor ends the drone's episode; otherwise it ends at ``HORIZON`` steps. Each drone resets
on its own.

There is no curriculum: every grip and delivery is at full difficulty, so "perfect"
statistics count every success.

Logged statistics, one value per finished episode, averaged over the episodes that
finished since the last report (each becomes ``environment/<key>`` in PufferLib's logs):

- ``perfect_grip``: share of episodes with at least one grip.
- ``perfect_deliv``: share of episodes with at least one delivery.
- ``perfect_now``: share of episodes that flew the whole mission end to end: at least one
  box gripped *and* delivered in the episode, and the episode ran to its end without a
  crash (a drone that delivers and then hits the floor or leaves the arena does not count).
- ``gripping``: share of the episode's steps spent carrying a box.
- ``delivered``: deliveries per episode.
- ``to_pickup`` / ``ho_pickup`` / ``de_pickup``: share of episodes in which the drone
  approached the box (came within ``APPROACH_RADIUS`` of the hover point above it),
  hovered above it, began the descent onto it.
- ``to_drop`` / ``ho_drop`` / ``de_drop``: the same at the drop zone, with a box.
- ``collision_rate``: drone-drone collisions per step.
- ``oob``: share of episodes ended by leaving the arena or hitting the floor.
- ``score``: grips plus deliveries per episode.
- ``episode_return``, ``episode_length``; ``n`` the number of episodes averaged.
"""

from __future__ import annotations

import numpy as np
import pufferlib
import gymnasium

DT = 0.05
HORIZON = 512
GRAVITY = 9.81

# Arena: |x|, |y| <= HALF_XY, floor at z = 0, ceiling at CEILING.
HALF_XY = 10.0
CEILING = 8.0
SPAWN_XY = 8.0

# Drone and onboard controller.
DRONE_MASS = 1.0
MAX_VEL = np.array([4.0, 4.0, 2.5], dtype=np.float32)
VEL_GAIN = 3.0  # 1/s: velocity error -> acceleration command
MAX_THRUST_Z = 2.0 * DRONE_MASS * GRAVITY  # thrust-to-weight 2
MAX_THRUST_XY = 0.6 * DRONE_MASS * GRAVITY  # tilt limit (~31 degrees at hover)
ACTUATOR_TAU = 0.15  # s, motor spin-up lag
DRAG = 0.3  # N per m/s
DRONE_FLOOR = 0.2  # body height at which the drone hits the floor

# Box and drop zone.
BOX_TOP = 0.4
BOX_MASS = (0.1, 0.3)  # kg, drawn per box: the empty-drone controller sags under it
CARRY_DRAG = 1.6  # drag multiplier while carrying
HANG = 0.5  # the box hangs this far below the drone
CARRY_FLOOR = DRONE_FLOOR + HANG
HOVER_HEIGHT = 1.5  # hover point above the box top / the drop pad (drone height)
DROP_HOVER_Z = 2.0
HOVER_RADIUS = 0.6
HOVER_SPEED = 0.8
APPROACH_RADIUS = 3.0
GRIP_XY = 0.35
GRIP_DZ = (0.1, 0.6)  # drone height above the box top that allows a grip
GRIP_SPEED = 0.8
GRIP_POINT_Z = BOX_TOP + 0.3
RELEASE_XY = 0.5
RELEASE_Z = 1.4
RELEASE_SPEED = 1.2
RELEASE_POINT_Z = 1.1

COLLISION_RADIUS = 0.5

# Rewards stay inside PufferLib's per-step clamp of [-1, 1].
R_PROGRESS = 0.5  # per metre of progress toward the current waypoint
R_HOVER = 0.25
R_GRIP = 1.0
R_DELIVER = 1.0
R_CRASH = -1.0
R_COLLISION = -0.05

OBS_SIZE = 27

STAT_KEYS = (
    "perfect_grip", "perfect_deliv", "perfect_now", "gripping", "delivered",
    "to_pickup", "ho_pickup", "de_pickup", "to_drop", "ho_drop", "de_drop",
    "collision_rate", "oob", "score", "episode_return", "episode_length",
)

# Per-episode milestone flags, one column each.
_FLAGS = ("to_pickup", "ho_pickup", "de_pickup", "to_drop", "ho_drop", "de_drop")
_F = {name: i for i, name in enumerate(_FLAGS)}


class DronePP(pufferlib.PufferEnv):
    """Vectorised drone pick-and-place; ``num_envs * num_drones`` agents.

    Args:
        num_envs: arenas simulated in this process.
        num_drones: drones per arena (they can collide with each other).
        report_interval: steps between statistics reports in ``infos``.
        seed: seed of the NumPy generator (``reset(seed)`` re-seeds it).
        buf: PufferLib shared buffers (given by ``pufferlib.vector``).
    """

    def __init__(self, num_envs: int = 8, num_drones: int = 16, report_interval: int = 64,
                 seed: int = 0, buf=None):
        if int(num_envs) < 1 or int(num_drones) < 1:
            raise ValueError("num_envs and num_drones must be at least 1")
        self.n_arenas = int(num_envs)
        self.num_drones = int(num_drones)
        self.num_agents = self.n_arenas * self.num_drones
        self.report_interval = int(report_interval)
        self.single_observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (OBS_SIZE,), np.float32)
        self.single_action_space = gymnasium.spaces.Box(-1.0, 1.0, (3,), np.float32)
        super().__init__(buf)
        self.rng = np.random.default_rng(seed)

        n = self.num_agents
        f32 = np.float32
        self.pos = np.zeros((n, 3), f32)
        self.vel = np.zeros((n, 3), f32)
        self.thrust = np.zeros((n, 3), f32)
        self.box = np.zeros((n, 3), f32)
        self.drop = np.zeros((n, 3), f32)
        self.box_mass = np.zeros(n, f32)
        self.carrying = np.zeros(n, bool)
        self.hovered = np.zeros(n, bool)  # hovered above the current target (box or drop)
        self.waypoint = np.zeros((n, 3), f32)
        self.prev_dist = np.zeros(n, f32)
        self.ep_len = np.zeros(n, np.int32)
        self.ep_return = np.zeros(n, f32)
        self.ep_grips = np.zeros(n, f32)
        self.ep_delivs = np.zeros(n, f32)
        self.ep_carry_steps = np.zeros(n, f32)
        self.ep_collisions = np.zeros(n, f32)
        self.ep_flags = np.zeros((n, len(_FLAGS)), bool)
        self.nearest = np.zeros((n, 3), f32)
        self.collided = np.zeros(n, bool)
        self._stats = {k: 0.0 for k in STAT_KEYS}
        self._stat_n = 0
        self._tick = 0
        self._gravity = np.array([0.0, 0.0, -GRAVITY], f32)
        self._hover_force = np.array([0.0, 0.0, DRONE_MASS * GRAVITY], f32)
        self._obs_scale = np.array([1 / HALF_XY, 1 / HALF_XY, 2 / CEILING], f32)
        self._arena_base = np.repeat(np.arange(self.n_arenas) * self.num_drones, self.num_drones)

    # ------------------------------------------------------------------ reset
    def reset(self, seed=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._respawn(np.arange(self.num_agents))
        self._stats = {k: 0.0 for k in STAT_KEYS}
        self._stat_n = 0
        self._tick = 0
        self._update_neighbours()
        self._observe()
        self.rewards[:] = 0
        self.terminals[:] = False
        self.truncations[:] = False
        return self.observations, []

    def _new_task(self, idx: np.ndarray) -> None:
        """A new box and drop zone for the drones ``idx`` (after spawn or delivery)."""
        k = len(idx)
        self.box[idx, :2] = self.rng.uniform(-SPAWN_XY, SPAWN_XY, (k, 2))
        self.box[idx, 2] = BOX_TOP
        self.drop[idx, :2] = self.rng.uniform(-SPAWN_XY, SPAWN_XY, (k, 2))
        self.drop[idx, 2] = 0.0
        self.box_mass[idx] = self.rng.uniform(*BOX_MASS, k)
        self.carrying[idx] = False
        self.hovered[idx] = False
        self._set_waypoint(idx)

    def _respawn(self, idx: np.ndarray) -> None:
        k = len(idx)
        self.pos[idx, :2] = self.rng.uniform(-SPAWN_XY, SPAWN_XY, (k, 2))
        self.pos[idx, 2] = self.rng.uniform(2.0, 6.0, k)
        self.vel[idx] = 0.0
        self.thrust[idx] = self._hover_force
        self.ep_len[idx] = 0
        self.ep_return[idx] = 0.0
        self.ep_grips[idx] = 0.0
        self.ep_delivs[idx] = 0.0
        self.ep_carry_steps[idx] = 0.0
        self.ep_collisions[idx] = 0.0
        self.ep_flags[idx] = False
        self._new_task(idx)

    def _set_waypoint(self, idx: np.ndarray) -> None:
        """Waypoint of each phase: hover point, then grip/release point once hovered."""
        carrying = self.carrying[idx]
        hovered = self.hovered[idx]
        target = np.where(carrying[:, None], self.drop[idx], self.box[idx])
        wp = target.copy()
        wp[:, 2] = np.where(
            carrying,
            np.where(hovered, RELEASE_POINT_Z, DROP_HOVER_Z),
            np.where(hovered, GRIP_POINT_Z, BOX_TOP + HOVER_HEIGHT),
        )
        self.waypoint[idx] = wp
        self.prev_dist[idx] = np.linalg.norm(wp - self.pos[idx], axis=1)

    # ------------------------------------------------------------------- step
    def step(self, actions):
        act = np.clip(np.asarray(actions, np.float32).reshape(self.num_agents, 3), -1.0, 1.0)
        self._fly(act)
        reward = np.zeros(self.num_agents, np.float32)
        self._update_neighbours()
        reward += R_COLLISION * self.collided
        self.ep_collisions += self.collided
        self._pick_and_place(reward)

        # Shaping: progress toward the current waypoint (unchanged by a phase switch above).
        dist = np.linalg.norm(self.waypoint - self.pos, axis=1)
        reward += R_PROGRESS * (self.prev_dist - dist)
        self.prev_dist = dist

        self.ep_carry_steps += self.carrying
        self.ep_len += 1
        return self._end_step(reward)

    def _fly(self, act: np.ndarray) -> None:
        """One physics step: velocity command -> bounded, lagged thrust -> motion."""
        carrying = self.carrying
        # Onboard velocity controller, tuned for the empty drone.
        cmd = VEL_GAIN * DRONE_MASS * (act * MAX_VEL - self.vel) + self._hover_force
        np.clip(cmd[:, 2], 0.0, MAX_THRUST_Z, out=cmd[:, 2])
        xy_norm = np.sqrt(cmd[:, 0] ** 2 + cmd[:, 1] ** 2) + 1e-6
        cmd[:, :2] *= np.minimum(1.0, MAX_THRUST_XY / xy_norm)[:, None]
        self.thrust += (DT / ACTUATOR_TAU) * (cmd - self.thrust)

        mass = DRONE_MASS + carrying * self.box_mass
        drag = DRAG * np.where(carrying, CARRY_DRAG, 1.0)
        acc = (self.thrust - drag[:, None] * self.vel) / mass[:, None] + self._gravity
        self.vel += acc * DT
        self.pos += self.vel * DT

    def _pick_and_place(self, reward: np.ndarray) -> None:
        """Milestones, grips and deliveries of this step, their reward added to ``reward``."""
        carrying = self.carrying
        speed = np.linalg.norm(self.vel, axis=1)
        rel = self.pos - np.where(carrying[:, None], self.drop, self.box)
        xy = np.sqrt(rel[:, 0] ** 2 + rel[:, 1] ** 2)
        height = rel[:, 2]  # above the box top (or the drop pad)
        hover_z = np.where(carrying, DROP_HOVER_Z, BOX_TOP + HOVER_HEIGHT)
        hover_dist = np.sqrt(xy ** 2 + (self.pos[:, 2] - hover_z) ** 2)

        # Milestones (per-episode flags are OR-ed; the pick/drop columns by phase).
        empty = ~carrying
        near = hover_dist < APPROACH_RADIUS
        self.ep_flags[:, _F["to_pickup"]] |= near & empty
        self.ep_flags[:, _F["to_drop"]] |= near & carrying
        new_hover = (~self.hovered) & (hover_dist < HOVER_RADIUS) & (speed < HOVER_SPEED)
        reward += R_HOVER * new_hover
        self.hovered |= new_hover
        self.ep_flags[:, _F["ho_pickup"]] |= self.hovered & empty
        self.ep_flags[:, _F["ho_drop"]] |= self.hovered & carrying
        descending = self.hovered & (xy < HOVER_RADIUS) & (self.pos[:, 2] < hover_z - 0.3) & (self.vel[:, 2] < 0)
        self.ep_flags[:, _F["de_pickup"]] |= descending & empty
        self.ep_flags[:, _F["de_drop"]] |= descending & carrying

        grip = (empty & self.hovered & (xy < GRIP_XY) & (height > GRIP_DZ[0]) & (height < GRIP_DZ[1])
                & (speed < GRIP_SPEED) & (self.vel[:, 2] < 0))
        release = (carrying & self.hovered & (xy < RELEASE_XY) & (self.pos[:, 2] < RELEASE_Z)
                   & (speed < RELEASE_SPEED))
        reward += R_GRIP * grip + R_DELIVER * release
        self.ep_grips += grip
        self.ep_delivs += release

        changed = np.flatnonzero(grip | new_hover)
        self.carrying |= grip
        self.hovered[grip] = False
        if len(changed):
            self._set_waypoint(changed)
        delivered = np.flatnonzero(release)
        if len(delivered):
            self._new_task(delivered)

    def _end_step(self, reward: np.ndarray):
        """Crashes and time limits, episode bookkeeping, observations and the periodic report."""
        floor = np.where(self.carrying, CARRY_FLOOR, DRONE_FLOOR)
        crashed = ((np.abs(self.pos[:, 0]) > HALF_XY) | (np.abs(self.pos[:, 1]) > HALF_XY)
                   | (self.pos[:, 2] > CEILING) | (self.pos[:, 2] < floor))
        reward += R_CRASH * crashed
        truncated = (~crashed) & (self.ep_len >= HORIZON)
        np.clip(reward, -1.0, 1.0, out=reward)
        self.ep_return += reward

        self.rewards[:] = reward
        self.terminals[:] = crashed
        self.truncations[:] = truncated
        done = np.flatnonzero(crashed | truncated)
        if len(done):
            self._record(done, crashed[done])
            self._respawn(done)
            self.nearest[done] = 0.0  # unknown until the next step's neighbour search

        self._observe()
        self._tick += 1
        infos = []
        if self._tick % self.report_interval == 0 and self._stat_n > 0:
            infos.append(self._report())
        return self.observations, self.rewards, self.terminals, self.truncations, infos

    # -------------------------------------------------------------- helpers
    def _update_neighbours(self) -> None:
        """Nearest other drone of the same arena, and drone-drone collisions."""
        d = self.num_drones
        if d == 1:
            self.nearest[:] = 0.0
            self.collided[:] = False
            return
        p = self.pos.reshape(self.n_arenas, d, 3)
        diff = p[:, None, :, :] - p[:, :, None, :]  # [e, i, j] = p_j - p_i
        dist2 = diff[..., 0] ** 2 + diff[..., 1] ** 2 + diff[..., 2] ** 2
        dist2.reshape(self.n_arenas, d * d)[:, :: d + 1] = np.inf
        j = np.argmin(dist2, axis=2).reshape(-1) + self._arena_base
        np.subtract(self.pos[j], self.pos, out=self.nearest)
        self.collided[:] = np.einsum("ij,ij->i", self.nearest, self.nearest) < COLLISION_RADIUS ** 2

    def _observe(self) -> None:
        o = self.observations
        to_wp = self.waypoint - self.pos
        o[:, 0:3] = self.vel / MAX_VEL
        o[:, 3:6] = (self.pos - np.array([0.0, 0.0, CEILING / 2], np.float32)) * self._obs_scale
        o[:, 6:9] = to_wp / HALF_XY
        o[:, 9:12] = np.clip(to_wp, -1.0, 1.0)
        o[:, 12:15] = (self.box - self.pos) / HALF_XY
        o[:, 15:18] = (self.drop - self.pos) / HALF_XY
        o[:, 18] = self.carrying
        o[:, 19] = self.hovered
        o[:, 20:23] = self.thrust / (DRONE_MASS * GRAVITY) - np.array([0.0, 0.0, 1.0], np.float32)
        o[:, 23:26] = np.clip(self.nearest / 5.0, -1.0, 1.0)
        o[:, 26] = self.pos[:, 2] / CEILING

    def _record(self, idx: np.ndarray, crashed: np.ndarray) -> None:
        """Add the finished episodes of drones ``idx`` to the running statistics."""
        s = self._stats
        length = self.ep_len[idx].astype(np.float64)
        gripped = self.ep_grips[idx] > 0
        delivered = self.ep_delivs[idx] > 0
        clean = delivered & ~crashed
        s["perfect_grip"] += float(gripped.sum())
        s["perfect_deliv"] += float(delivered.sum())
        s["perfect_now"] += float(clean.sum())
        s["gripping"] += float((self.ep_carry_steps[idx] / length).sum())
        s["delivered"] += float(self.ep_delivs[idx].sum())
        for name, col in _F.items():
            s[name] += float(self.ep_flags[idx, col].sum())
        s["collision_rate"] += float((self.ep_collisions[idx] / length).sum())
        s["oob"] += float(crashed.sum())
        s["score"] += float((self.ep_grips[idx] + self.ep_delivs[idx]).sum())
        s["episode_return"] += float(self.ep_return[idx].sum())
        s["episode_length"] += float(length.sum())
        self._stat_n += len(idx)

    def _report(self) -> dict:
        n = self._stat_n
        out = {k: v / n for k, v in self._stats.items()}
        out["n"] = float(n)
        self._stats = {k: 0.0 for k in STAT_KEYS}
        self._stat_n = 0
        return out

    def close(self):
        pass


def make(num_envs: int = 8, num_drones: int = 16, seed: int = 0, buf=None, **kwargs) -> DronePP:
    """Env creator for ``pufferlib.vector.make``."""
    return DronePP(num_envs=num_envs, num_drones=num_drones, seed=seed, buf=buf, **kwargs)
