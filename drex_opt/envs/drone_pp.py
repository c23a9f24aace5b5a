"""drone_pp: the built-in drone pick-and-place environment (grip -> carry -> deliver).

A vectorised NumPy ``pufferlib.PufferEnv``: ``num_envs`` arenas x ``num_drones`` drones,
every step is a handful of array operations over all drones at once (no per-drone loop).
Several such envs (PufferLib's ``vec.num_envs``) can be stepped as one object
(``groups``, :func:`make_batched`), which keeps each one's seed and reports: training in
one process pays for the array operations once per step instead of once per env.

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


# Waypoint height per phase, indexed by 2 * carrying + hovered.
_WAYPOINT_Z = np.array([BOX_TOP + HOVER_HEIGHT, GRIP_POINT_Z, DROP_HOVER_Z, RELEASE_POINT_Z])
# Uniform draws of a respawn, in the order each sub-env's generator yields them:
# spawn x, y; spawn height; box x, y; drop x, y; box mass (a new task is the last five).
_SPAWN_FIELDS = (2, 1, 2, 2, 1)
_TASK_FIELDS = (2, 2, 1)
_SPAWN_LOW = np.array([-SPAWN_XY, -SPAWN_XY, 2.0, -SPAWN_XY, -SPAWN_XY, -SPAWN_XY, -SPAWN_XY, BOX_MASS[0]])
_SPAWN_HIGH = np.array([SPAWN_XY, SPAWN_XY, 6.0, SPAWN_XY, SPAWN_XY, SPAWN_XY, SPAWN_XY, BOX_MASS[1]])
_DRAG = np.array([DRAG, DRAG * CARRY_DRAG])  # indexed by carrying
_GRAVITY_Z = np.float64(np.float32(-GRAVITY))  # the float32 gravity the physics has always added


def _norm(v: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Row norms of an (n, 3) array, summed in ``np.linalg.norm``'s order, a third of its time."""
    np.square(v[:, 0], out=out)
    out += np.square(v[:, 1])
    out += np.square(v[:, 2])
    return np.sqrt(out, out=out)


class DronePP(pufferlib.PufferEnv):
    """Vectorised drone pick-and-place; ``groups * num_envs * num_drones`` agents.

    ``groups`` sub-envs of ``num_envs`` arenas each can be stepped as one: sub-env ``g``
    owns the agents ``[g * num_envs * num_drones, (g + 1) * num_envs * num_drones)``, has
    its own generator seeded ``seed + g`` (as PufferLib's vector backends seed separate
    env instances) and its own statistics report. Stepping ``groups`` sub-envs in one
    object gives bit-for-bit the observations, rewards and ends of ``groups`` separate
    instances stepped one after the other, and the same reports (to float rounding), with
    one set of array operations instead of ``groups``.

    Subclasses (``drone_pp_hard``) change the physics (``_fly``), the draws of a task
    (``spawn_low``/``spawn_high``/``spawn_fields``/``task_fields``, ``_place_task``), the grip
    and release windows and the observation (``obs_size``, ``_fill_obs``); the task logic,
    the statistics and the reports stay here.

    Args:
        num_envs: arenas per sub-env.
        num_drones: drones per arena (they can collide with each other).
        report_interval: steps between statistics reports in ``infos``.
        seed: seed of sub-env 0's NumPy generator (``reset(seed)`` re-seeds them all).
        buf: PufferLib shared buffers (given by ``pufferlib.vector``).
        groups: sub-envs stepped together (1: a plain env).
    """

    obs_size = OBS_SIZE
    grip_xy = GRIP_XY
    release_xy = RELEASE_XY
    spawn_low = _SPAWN_LOW
    spawn_high = _SPAWN_HIGH
    spawn_fields = _SPAWN_FIELDS
    task_fields = _TASK_FIELDS

    def __init__(self, num_envs: int = 8, num_drones: int = 16, report_interval: int = 64,
                 seed: int = 0, buf=None, groups: int = 1):
        if int(num_envs) < 1 or int(num_drones) < 1 or int(groups) < 1:
            raise ValueError("num_envs, num_drones and groups must be at least 1")
        self.groups = int(groups)
        self.num_drones = int(num_drones)
        self.n_arenas = self.groups * int(num_envs)
        self.group_agents = int(num_envs) * self.num_drones
        self.num_agents = self.groups * self.group_agents
        self.report_interval = int(report_interval)
        self.single_observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (self.obs_size,), np.float32)
        self.single_action_space = gymnasium.spaces.Box(-1.0, 1.0, (3,), np.float32)
        super().__init__(buf)
        self._seed(seed)

        n = self.num_agents
        f32 = np.float32
        self.pos = np.zeros((n, 3), f32)
        self.vel = np.zeros((n, 3), f32)
        self.thrust = np.zeros((n, 3), f32)
        self._targets = np.zeros((n, 2, 3), f32)  # box, drop zone: one subtraction observes both
        self.box = self._targets[:, 0]
        self.drop = self._targets[:, 1]
        self.box_mass = np.zeros(n, f32)
        self.carrying = np.zeros(n, bool)
        self.hovered = np.zeros(n, bool)  # hovered above the current target (box or drop)
        self.waypoint = np.zeros((n, 3), f32)
        self.prev_dist = np.zeros(n, f32)
        self.ep_len = np.zeros(n, np.int32)
        # Per-episode sums in one array, so a finished episode is read with one indexing.
        self._ep = np.zeros((n, 5), f32)
        self.ep_return, self.ep_grips, self.ep_delivs, self.ep_carry_steps, self.ep_collisions = self._ep.T
        # Stored flag-major so the per-step update runs along the drones.
        self._flags_t = np.zeros((len(_FLAGS), n), bool)
        self.ep_flags = self._flags_t.T
        self.nearest = np.zeros((n, 3), f32)
        self.collided = np.zeros(n, bool)
        self._stats = np.zeros((self.groups, len(STAT_KEYS)))
        self._stat_n = np.zeros(self.groups, np.int64)
        self._tick = 0
        self._hover_force = np.array([0.0, 0.0, DRONE_MASS * GRAVITY], f32)
        self._obs_scale = np.array([1 / HALF_XY, 1 / HALF_XY, 2 / CEILING], f32)
        self._obs_centre = np.array([0.0, 0.0, CEILING / 2], f32)
        self._thrust_offset = np.array([0.0, 0.0, 1.0], f32)
        self._collision_reward = np.array([0.0, R_COLLISION], f32)
        self._arena_base = np.repeat(np.arange(self.n_arenas) * self.num_drones, self.num_drones)
        self._group_starts = np.arange(self.groups) * self.group_agents
        # Step buffers: the hot path allocates as little as it can.
        self._act = np.zeros((n, 3), f32)
        self._cmd = np.zeros((n, 3), f32)
        self._acc = np.zeros((n, 3))  # float64, as the physics has always computed it
        self._sq = np.zeros(n, f32)
        self._rel = np.zeros((n, 3), f32)
        self._rows2 = 2 * np.arange(n)
        self._dist = np.zeros(n, f32)
        self._speed = np.zeros(n, f32)
        self._xy = np.zeros(n, f32)
        self._to_wp = np.zeros((n, 3), f32)
        self._dist2 = np.zeros((self.n_arenas, self.num_drones, self.num_drones), f32)
        self._marks = np.zeros((3, n), bool)  # near, hovered, descending
        self._phase = np.zeros((2, 1, n), bool)  # empty, carrying
        self._new_flags = np.zeros((2, 3, n), bool)
        self._flags3 = self._flags_t.reshape(2, 3, n)
        # Observations are built feature-major (every operation runs along the drones), then
        # transposed into PufferLib's (agents, features) buffer with one copy.
        self._obs_t = np.zeros((self.obs_size, n), f32)

    @property
    def agents_per_batch(self) -> int:
        return self.num_agents

    @property
    def rng(self) -> np.random.Generator:
        """Sub-env 0's generator (the only one of a plain env)."""
        return self.rngs[0]

    def _seed(self, seed) -> None:
        self.rngs = [np.random.default_rng(None if seed is None else seed + g) for g in range(self.groups)]

    # ------------------------------------------------------------------ reset
    def reset(self, seed=None):
        if seed is not None:
            self._seed(seed)
        self._respawn(np.arange(self.num_agents))
        self._stats[:] = 0.0
        self._stat_n[:] = 0
        self._tick = 0
        self._update_neighbours()
        self._observe()
        self.rewards[:] = 0
        self.terminals[:] = False
        self.truncations[:] = False
        return self.observations, []

    def _uniforms(self, idx: np.ndarray, fields: tuple[int, ...]) -> np.ndarray:
        """Uniform [0, 1) draws for the drones ``idx`` (ascending), one column per value.

        Each sub-env's generator yields its drones' draws field by field (all first fields,
        then all second fields, ...), exactly as one ``Generator.uniform`` call per field
        would: the same numbers in the same order.
        """
        k, width = len(idx), sum(fields)
        out = np.empty((k, width))
        if self.groups == 1:
            parts = ((0, k, self.rngs[0]),)
        else:
            cuts = np.searchsorted(idx, self._group_starts).tolist() + [k]
            parts = ((cuts[g], cuts[g + 1], self.rngs[g]) for g in range(self.groups) if cuts[g + 1] > cuts[g])
        for a, b, rng in parts:
            m = b - a
            if m == 1:  # one drone: its draws are already in column order
                out[a] = rng.random(width)
                continue
            u = rng.random(m * width)
            off = col = 0
            for w in fields:
                out[a:b, col:col + w] = u[off:off + m * w].reshape(m, w)
                off += m * w
                col += w
        return out

    def _new_task(self, idx: np.ndarray) -> None:
        """A new box and drop zone for the drones ``idx`` (after spawn or delivery)."""
        u = self._uniforms(idx, self.task_fields)
        u *= (self.spawn_high - self.spawn_low)[3:]
        u += self.spawn_low[3:]  # low + range * u, as Generator.uniform computes it
        self._place_task(idx, u)

    def _place_task(self, idx: np.ndarray, u: np.ndarray) -> None:
        """Box x, y, drop x, y and box mass from ``u``; the drones start the task empty,
        heading for the hover point above the box."""
        t = np.empty((len(idx), 2, 3), np.float32)
        t[:, :, :2] = u[:, 0:4].reshape(-1, 2, 2)
        t[:, :, 2] = (BOX_TOP, 0.0)
        self._targets[idx] = t
        self.box_mass[idx] = u[:, 4]
        self.carrying[idx] = False
        self.hovered[idx] = False
        wp = t[:, 0]
        wp[:, 2] = _WAYPOINT_Z[0]
        self.waypoint[idx] = wp
        wp -= self.pos[idx]
        self.prev_dist[idx] = _norm(wp, np.empty(len(idx), np.float32))

    def _respawn(self, idx: np.ndarray) -> None:
        u = self._uniforms(idx, self.spawn_fields)
        u *= self.spawn_high - self.spawn_low
        u += self.spawn_low
        self.pos[idx] = u[:, 0:3]
        self.vel[idx] = 0.0
        self.thrust[idx] = self._hover_force
        self.ep_len[idx] = 0
        self._ep[idx] = 0.0
        self.ep_flags[idx] = False
        self._place_task(idx, u[:, 3:])

    def _set_waypoint(self, idx: np.ndarray) -> None:
        """Waypoint of each phase: hover point, then grip/release point once hovered."""
        carrying = self.carrying[idx]
        wp = self._targets[idx, carrying.view(np.uint8)]
        wp[:, 2] = _WAYPOINT_Z[2 * carrying.view(np.uint8) + self.hovered[idx]]
        self.waypoint[idx] = wp
        wp -= self.pos[idx]
        self.prev_dist[idx] = _norm(wp, np.empty(len(idx), np.float32))

    # ------------------------------------------------------------------- step
    def step(self, actions):
        act = np.clip(np.asarray(actions, np.float32).reshape(self.num_agents, 3), -1.0, 1.0, out=self._act)
        self._fly(act)
        reward = self.rewards  # built in place in PufferLib's buffer
        self._update_neighbours()
        np.take(self._collision_reward, self.collided.view(np.uint8), out=reward)
        self.ep_collisions += self.collided
        self._pick_and_place(reward)

        # Shaping: progress toward the current waypoint (unchanged by a phase switch above).
        dist = _norm(np.subtract(self.waypoint, self.pos, out=self._to_wp), self._dist)
        np.subtract(self.prev_dist, dist, out=self.prev_dist)
        self.prev_dist *= R_PROGRESS
        reward += self.prev_dist
        self.prev_dist[:] = dist

        self.ep_carry_steps += self.carrying
        self.ep_len += 1
        return self._end_step(reward)

    def _fly(self, act: np.ndarray) -> None:
        """One physics step: velocity command -> bounded, lagged thrust -> motion."""
        carrying = self.carrying
        # Onboard velocity controller, tuned for the empty drone.
        cmd = np.multiply(act, MAX_VEL, out=self._cmd)
        cmd -= self.vel
        cmd *= VEL_GAIN * DRONE_MASS
        cmd[:, 2] += self._hover_force[2]  # the hover force has no x and y
        np.clip(cmd[:, 2], 0.0, MAX_THRUST_Z, out=cmd[:, 2])
        # (one column at a time: NumPy loops over an (n, 2) slice row by row)
        xy_norm = np.square(cmd[:, 0], out=self._xy)
        xy_norm += np.square(cmd[:, 1], out=self._sq)
        np.sqrt(xy_norm, out=xy_norm)
        xy_norm += 1e-6
        np.divide(MAX_THRUST_XY, xy_norm, out=xy_norm)
        np.minimum(xy_norm, 1.0, out=xy_norm)
        cmd[:, 0] *= xy_norm
        cmd[:, 1] *= xy_norm
        cmd -= self.thrust
        cmd *= DT / ACTUATOR_TAU
        self.thrust += cmd

        # In float64, as the physics has always been computed (float32 state promoted);
        # promoting once up front keeps the broadcasts below single-dtype, which is faster.
        mass = (DRONE_MASS + carrying * self.box_mass).astype(np.float64)
        drag = np.take(_DRAG, carrying.view(np.uint8))
        acc = np.multiply(self.vel.astype(np.float64), drag[:, None], out=self._acc)
        np.subtract(self.thrust, acc, out=acc)
        acc /= mass[:, None]
        acc[:, 2] += _GRAVITY_Z  # x and y of gravity are zero: adding them changes nothing
        acc *= DT
        self.vel += acc
        np.multiply(self.vel, DT, out=self._cmd)
        self.pos += self._cmd

    def _pick_and_place(self, reward: np.ndarray) -> None:
        """Milestones, grips and deliveries of this step, their reward added to ``reward``."""
        carrying = self.carrying
        hovered = self.hovered
        pos_z = self.pos[:, 2]
        vel_z = self.vel[:, 2]
        speed = _norm(self.vel, self._speed)
        # the current target (drop zone when carrying, else the box), gathered in one take
        rel = np.take(self._targets.reshape(-1, 3), self._rows2 + carrying, axis=0, out=self._rel)
        np.subtract(self.pos, rel, out=rel)
        xy = np.square(rel[:, 0], out=self._xy)
        xy += np.square(rel[:, 1], out=self._sq)
        np.sqrt(xy, out=xy)
        height = rel[:, 2]  # above the box top (or the drop pad)
        hover_z = _WAYPOINT_Z[2 * carrying.view(np.uint8)]
        hover_dist = np.sqrt(np.square(xy) + np.square(pos_z - hover_z))

        # Milestones (per-episode flags are OR-ed; the pick/drop columns by phase).
        marks = self._marks
        np.less(hover_dist, APPROACH_RADIUS, out=marks[0])  # near
        new_hover = (hover_dist < HOVER_RADIUS) & (speed < HOVER_SPEED)
        new_hover &= ~hovered
        if new_hover.any():
            reward += R_HOVER * new_hover
            hovered |= new_hover
        marks[1] = hovered
        any_hovered = hovered.any()
        if any_hovered:
            descending = np.less(xy, HOVER_RADIUS, out=marks[2])
            descending &= hovered
            descending &= pos_z < hover_z - 0.3
            descending &= vel_z < 0
        else:
            marks[2] = False
        phase = self._phase
        np.logical_not(carrying, out=phase[0, 0])
        phase[1, 0] = carrying
        np.logical_and(marks, phase, out=self._new_flags)
        self._flags3 |= self._new_flags

        changed = new_hover
        if any_hovered:
            grip = (phase[0, 0] & hovered & (xy < self.grip_xy) & (height > GRIP_DZ[0]) & (height < GRIP_DZ[1])
                    & (speed < GRIP_SPEED) & (vel_z < 0))
            release = (carrying & hovered & (xy < self.release_xy) & (pos_z < RELEASE_Z) & (speed < RELEASE_SPEED))
            if grip.any() or release.any():
                reward += R_GRIP * grip + R_DELIVER * release
                self.ep_grips += grip
                self.ep_delivs += release
                changed = grip | new_hover
                self.carrying |= grip
                self.hovered[grip] = False
                self._set_waypoint(np.flatnonzero(changed))
                delivered = np.flatnonzero(release)
                if len(delivered):
                    self._new_task(delivered)
                return
        changed = np.flatnonzero(changed)
        if len(changed):
            self._set_waypoint(changed)

    def _end_step(self, reward: np.ndarray):
        """Crashes and time limits, episode bookkeeping, observations and the periodic report."""
        floor = np.where(self.carrying, CARRY_FLOOR, DRONE_FLOOR)
        crashed = self.terminals
        pos_z = self.pos[:, 2]
        np.greater(np.abs(self.pos[:, 0]), HALF_XY, out=crashed)
        crashed |= np.abs(self.pos[:, 1]) > HALF_XY
        crashed |= pos_z > CEILING
        crashed |= pos_z < floor
        reward += R_CRASH * crashed
        truncated = np.greater_equal(self.ep_len, HORIZON, out=self.truncations)
        truncated &= ~crashed
        np.clip(reward, -1.0, 1.0, out=reward)
        self.ep_return += reward

        done = np.flatnonzero(crashed | truncated)
        if len(done):
            self._record(done, crashed[done])
            self._respawn(done)
            self.nearest[done] = 0.0  # unknown until the next step's neighbour search

        self._observe()
        self._tick += 1
        infos = []
        if self._tick % self.report_interval == 0:
            infos = self._reports()
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
        sq = np.einsum("eij,eij->ei", p, p)
        dist2 = np.matmul(p, p.transpose(0, 2, 1), out=self._dist2)
        dist2 *= -2.0
        dist2 += sq[:, :, None]
        dist2 += sq[:, None, :]
        dist2.reshape(self.n_arenas, d * d)[:, :: d + 1] = np.inf
        j = np.argmin(dist2, axis=2).reshape(-1)
        j += self._arena_base
        np.take(self.pos, j, axis=0, out=self.nearest)
        self.nearest -= self.pos
        np.less(np.einsum("ij,ij->i", self.nearest, self.nearest), COLLISION_RADIUS ** 2, out=self.collided)

    def _observe(self) -> None:
        self._fill_obs(self._obs_t)
        np.copyto(self.observations, self._obs_t.T)

    def _fill_obs(self, t: np.ndarray) -> None:
        """The first ``OBS_SIZE`` features, feature-major, into ``t``."""
        pos = self.pos.T
        np.divide(self.vel.T, MAX_VEL[:, None], out=t[0:3])
        np.subtract(pos, self._obs_centre[:, None], out=t[3:6])
        t[3:6] *= self._obs_scale[:, None]
        to_wp = np.subtract(self.waypoint.T, pos, out=t[6:9])
        np.clip(to_wp, -1.0, 1.0, out=t[9:12])
        to_wp /= HALF_XY
        targets = np.subtract(self._targets.transpose(1, 2, 0), pos, out=t[12:18].reshape(2, 3, -1))
        targets /= HALF_XY
        t[18] = self.carrying
        t[19] = self.hovered
        np.divide(self.thrust.T, DRONE_MASS * GRAVITY, out=t[20:23])
        t[20:23] -= self._thrust_offset[:, None]
        np.divide(self.nearest.T, 5.0, out=t[23:26])
        np.clip(t[23:26], -1.0, 1.0, out=t[23:26])
        np.divide(pos[2], CEILING, out=t[26])

    def _record(self, idx: np.ndarray, crashed: np.ndarray) -> None:
        """Add the finished episodes of drones ``idx`` to their sub-env's running statistics."""
        ep = self._ep[idx]  # return, grips, deliveries, carried steps, collisions
        length = self.ep_len[idx].astype(np.float64)
        v = np.empty((len(idx), len(STAT_KEYS)))
        v[:, 0:2] = ep[:, 1:3] > 0  # perfect_grip, perfect_deliv
        v[:, 2] = v[:, 1] * ~crashed  # perfect_now: delivered, no crash
        v[:, 3] = ep[:, 3] / length  # gripping
        v[:, 4] = ep[:, 2]  # delivered
        v[:, 5:11] = self.ep_flags[idx]
        v[:, 11] = ep[:, 4] / length  # collision_rate
        v[:, 12] = crashed  # oob
        v[:, 13] = ep[:, 1] + ep[:, 2]  # score
        v[:, 14] = ep[:, 0]  # episode_return
        v[:, 15] = length  # episode_length
        if self.groups == 1:
            self._stats[0] += v.sum(axis=0)
            self._stat_n[0] += len(idx)
        else:
            group = idx // self.group_agents
            np.add.at(self._stats, group, v)
            self._stat_n += np.bincount(group, minlength=self.groups)

    def _reports(self) -> list[dict]:
        """One report per sub-env with finished episodes since its last report."""
        out = []
        for g in np.flatnonzero(self._stat_n).tolist():
            n = int(self._stat_n[g])
            report = dict(zip(STAT_KEYS, (self._stats[g] / n).tolist()))
            report["n"] = float(n)
            out.append(report)
            self._stats[g] = 0.0
            self._stat_n[g] = 0
        return out

    def close(self):
        pass


def make(num_envs: int = 8, num_drones: int = 16, seed: int = 0, buf=None, **kwargs) -> DronePP:
    """Env creator for ``pufferlib.vector.make``."""
    return DronePP(num_envs=num_envs, num_drones=num_drones, seed=seed, buf=buf, **kwargs)


def make_batched(groups: int, num_envs: int = 8, num_drones: int = 16, seed: int = 0, buf=None,
                 **kwargs) -> DronePP:
    """``groups`` sub-envs as one env, for ``pufferlib.vector.make(..., backend=PufferEnv)``.

    The same agents, seeds (``seed + g``), observations, rewards and reports as PufferLib's
    Serial backend over ``groups`` instances of :func:`make`, in one step call.
    """
    return DronePP(num_envs=num_envs, num_drones=num_drones, seed=seed, buf=buf, groups=groups, **kwargs)
