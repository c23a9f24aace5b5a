"""drone_pp: the built-in drone pick-and-place environment (grip -> carry -> deliver).

A ``pufferlib.PufferEnv``: ``num_envs`` arenas x ``num_drones`` drones. A step runs as
loops over the drones compiled by numba (``compiled=True``, the default), or as a handful of
NumPy array operations over all drones at once; both give the same numbers bit for bit
(the compiled loops are several times faster: no array temporaries, one pass per drone).
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

import gymnasium
import numba
import numpy as np
import pufferlib

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


# ------------------------------------------------------------ compiled step
# The step of drone_pp as compiled loops over the drones (numba): the same arithmetic as the
# NumPy step below, operation by operation and in the same precision, so both give the same
# numbers bit for bit (tests/test_drone_pp_equivalence.py). NumPy casts a Python float to the
# array's float32 before it scales or compares a float32 array, so the loops use float32
# twins of those constants; where NumPy promotes to float64 (the physics, hover distances,
# floor heights) the loops do too. Random draws (respawns, new tasks) and reports stay in
# NumPy: they are rare, and the generators' streams must stay exactly as they are.
_f32 = np.float32
_K_MAX_VEL = MAX_VEL
_K_GAIN = _f32(VEL_GAIN * DRONE_MASS)
_K_HOVER_FORCE = _f32(DRONE_MASS * GRAVITY)
_K_MAX_THRUST_Z = _f32(MAX_THRUST_Z)
_K_MAX_THRUST_XY = _f32(MAX_THRUST_XY)
_K_EPS = _f32(1e-6)
_K_LAG = _f32(DT / ACTUATOR_TAU)
_K_DT = _f32(DT)
_K_ONE = _f32(1.0)
_K_ZERO = _f32(0.0)
_K_COLLISION_R2 = _f32(COLLISION_RADIUS ** 2)
_K_R_COLLISION = _f32(R_COLLISION)
_K_R_HOVER = _f32(R_HOVER)
_K_R_TASK = _f32(R_GRIP)  # a grip and a delivery pay the same, and never in one step
_K_R_CRASH = _f32(R_CRASH)
_K_R_PROGRESS = _f32(R_PROGRESS)
_K_HOVER_RADIUS = _f32(HOVER_RADIUS)
_K_HOVER_SPEED = _f32(HOVER_SPEED)
_K_GRIP_DZ = (_f32(GRIP_DZ[0]), _f32(GRIP_DZ[1]))
_K_GRIP_SPEED = _f32(GRIP_SPEED)
_K_RELEASE_Z = _f32(RELEASE_Z)
_K_RELEASE_SPEED = _f32(RELEASE_SPEED)
_K_HALF_XY = _f32(HALF_XY)
_K_SPAWN_XY = _f32(SPAWN_XY)
_K_CEILING = _f32(CEILING)
_K_OBS_CENTRE_Z = _f32(CEILING / 2)
_K_OBS_SCALE = np.array([1 / HALF_XY, 1 / HALF_XY, 2 / CEILING], np.float32)
_K_NEAREST_SCALE = _f32(5.0)
_K_AXIS_Z = 2


@numba.njit(cache=True)
def _clip1(x, lo, hi):
    """``np.clip`` of one value (NaN stays NaN, as there)."""
    if x > hi:
        return hi
    if x < lo:
        return lo
    return x


@numba.njit(cache=True)
def _k_fly(actions, act, pos, vel, thrust, carrying, box_mass):
    """Clip the actions into ``act``; the velocity controller, thrust lag and motion (``_fly``)."""
    for i in range(pos.shape[0]):
        for k in range(3):
            act[i, k] = _clip1(actions[i, k], -_K_ONE, _K_ONE)
        cx = (act[i, 0] * _K_MAX_VEL[0] - vel[i, 0]) * _K_GAIN
        cy = (act[i, 1] * _K_MAX_VEL[1] - vel[i, 1]) * _K_GAIN
        cz = (act[i, 2] * _K_MAX_VEL[2] - vel[i, 2]) * _K_GAIN
        cz = _clip1(cz + _K_HOVER_FORCE, _K_ZERO, _K_MAX_THRUST_Z)
        xy = np.sqrt(cx * cx + cy * cy) + _K_EPS
        xy = _K_MAX_THRUST_XY / xy
        if xy > _K_ONE:
            xy = _K_ONE
        thrust[i, 0] += (cx * xy - thrust[i, 0]) * _K_LAG
        thrust[i, 1] += (cy * xy - thrust[i, 1]) * _K_LAG
        thrust[i, 2] += (cz - thrust[i, 2]) * _K_LAG
        mass = np.float64(_K_ONE + (box_mass[i] if carrying[i] else _K_ZERO))
        drag = _DRAG[1] if carrying[i] else _DRAG[0]
        for k in range(3):
            acc = (np.float64(thrust[i, k]) - np.float64(vel[i, k]) * drag) / mass
            if k == _K_AXIS_Z:
                acc += _GRAVITY_Z
            vel[i, k] = np.float32(np.float64(vel[i, k]) + acc * DT)
            pos[i, k] += vel[i, k] * _K_DT


@numba.njit(cache=True)
def _k_norm3(x, y, z):
    """``_norm`` of one row: the squares summed left to right, in float32."""
    return np.sqrt(x * x + y * y + z * z)


@numba.njit(cache=True)
def _k_set_waypoint(i, pos, targets, carrying, hovered, waypoint, prev_dist):
    t = 1 if carrying[i] else 0
    waypoint[i, 0] = targets[i, t, 0]
    waypoint[i, 1] = targets[i, t, 1]
    waypoint[i, 2] = np.float32(_WAYPOINT_Z[2 * t + (1 if hovered[i] else 0)])
    prev_dist[i] = _k_norm3(waypoint[i, 0] - pos[i, 0], waypoint[i, 1] - pos[i, 1], waypoint[i, 2] - pos[i, 2])


@numba.njit(cache=True)
def _k_neighbours(pos, num_drones, nearest, collided):
    """Nearest other drone of the same arena and collisions (``_update_neighbours``)."""
    n = pos.shape[0]
    d = num_drones
    if d == 1:
        nearest[:] = 0.0
        collided[:] = False
        return
    for base in range(0, n, d):
        for i in range(base, base + d):
            best = np.float32(np.inf)
            j_best = base  # argmin's answer when every distance is infinite
            for j in range(base, base + d):
                if j == i:
                    continue
                dx = pos[j, 0] - pos[i, 0]
                dy = pos[j, 1] - pos[i, 1]
                dz = pos[j, 2] - pos[i, 2]
                d2 = dx * dx + dy * dy + dz * dz
                if d2 != d2:  # argmin stops at the first NaN
                    j_best = j
                    break
                if d2 < best:
                    best = d2
                    j_best = j
            for k in range(3):
                nearest[i, k] = pos[j_best, k] - pos[i, k]
            collided[i] = (nearest[i, 0] * nearest[i, 0] + nearest[i, 1] * nearest[i, 1]
                           + nearest[i, 2] * nearest[i, 2]) < _K_COLLISION_R2


@numba.njit(cache=True)
def _k_pick_and_place(pos, vel, targets, carrying, hovered, waypoint, prev_dist, ep, flags, collided, reward,
                      grip_xy, release_xy, drop_on_collision, delivered):
    """Collision penalty, milestones, grips and deliveries (``_pick_and_place``); the drones
    that delivered are written to ``delivered``, their count returned (they need a new task).
    With ``drop_on_collision`` (drone_pp_hard) a collision first knocks a carried box off:
    it lands under the drone (within the spawn area) and must be gripped again."""
    n_delivered = 0
    for i in range(pos.shape[0]):
        r = _K_R_COLLISION if collided[i] else _K_ZERO
        if collided[i]:
            ep[i, 4] += _K_ONE
            if drop_on_collision and carrying[i]:
                targets[i, 0, 0] = _clip1(pos[i, 0], -_K_SPAWN_XY, _K_SPAWN_XY)
                targets[i, 0, 1] = _clip1(pos[i, 1], -_K_SPAWN_XY, _K_SPAWN_XY)
                carrying[i] = False
                hovered[i] = False
                _k_set_waypoint(i, pos, targets, carrying, hovered, waypoint, prev_dist)
        carry = carrying[i]
        t = 1 if carry else 0
        pz = pos[i, 2]
        vz = vel[i, 2]
        speed = _k_norm3(vel[i, 0], vel[i, 1], vz)
        rx = pos[i, 0] - targets[i, t, 0]
        ry = pos[i, 1] - targets[i, t, 1]
        height = pz - targets[i, t, 2]
        xy = np.sqrt(rx * rx + ry * ry)
        hover_z = _WAYPOINT_Z[2 * t]
        dz = np.float64(pz) - hover_z
        hover_dist = np.sqrt(np.float64(xy * xy) + dz * dz)
        new_hover = hover_dist < HOVER_RADIUS and speed < _K_HOVER_SPEED and not hovered[i]
        if new_hover:
            r += _K_R_HOVER
            hovered[i] = True
        hov = hovered[i]
        descending = xy < _K_HOVER_RADIUS and hov and np.float64(pz) < hover_z - 0.3 and vz < 0
        col = 3 * t
        flags[col, i] = flags[col, i] or hover_dist < APPROACH_RADIUS
        flags[col + 1, i] = flags[col + 1, i] or hov
        flags[col + 2, i] = flags[col + 2, i] or descending
        grip = (not carry and hov and xy < grip_xy and height > _K_GRIP_DZ[0] and height < _K_GRIP_DZ[1]
                and speed < _K_GRIP_SPEED and vz < 0)
        release = carry and hov and xy < release_xy and pz < _K_RELEASE_Z and speed < _K_RELEASE_SPEED
        if grip or release:
            r += _K_R_TASK
        if grip:
            ep[i, 1] += _K_ONE
            carrying[i] = True
            hovered[i] = False
        if release:
            ep[i, 2] += _K_ONE
            delivered[n_delivered] = i
            n_delivered += 1
        if grip or new_hover:
            _k_set_waypoint(i, pos, targets, carrying, hovered, waypoint, prev_dist)
        reward[i] = r
    return n_delivered


@numba.njit(cache=True)
def _k_settle(pos, carrying, waypoint, prev_dist, ep_len, ep, flags, reward, terminals, truncations,
              group_agents, stats, stat_n, done):
    """Progress shaping, crashes and time limits, episode sums and the statistics of finished
    episodes (``step``'s end and ``_end_step``, up to the respawns); the drones whose episode
    ended are written to ``done``, their count returned."""
    n_done = 0
    for i in range(pos.shape[0]):
        dist = _k_norm3(waypoint[i, 0] - pos[i, 0], waypoint[i, 1] - pos[i, 1], waypoint[i, 2] - pos[i, 2])
        r = reward[i] + (prev_dist[i] - dist) * _K_R_PROGRESS
        prev_dist[i] = dist
        carry = carrying[i]
        if carry:
            ep[i, 3] += _K_ONE
        ep_len[i] += 1
        pz = pos[i, 2]
        floor = CARRY_FLOOR if carry else DRONE_FLOOR
        crashed = (abs(pos[i, 0]) > _K_HALF_XY or abs(pos[i, 1]) > _K_HALF_XY or pz > _K_CEILING
                   or np.float64(pz) < floor)
        if crashed:
            r += _K_R_CRASH
        truncated = ep_len[i] >= HORIZON and not crashed
        r = _clip1(r, -_K_ONE, _K_ONE)
        reward[i] = r
        terminals[i] = crashed
        truncations[i] = truncated
        ep[i, 0] += r
        if crashed or truncated:
            done[n_done] = i
            n_done += 1
            g = i // group_agents
            length = np.float64(ep_len[i])
            delivered = ep[i, 2] > 0
            s = stats[g]
            s[0] += 1.0 if ep[i, 1] > 0 else 0.0  # perfect_grip
            s[1] += 1.0 if delivered else 0.0  # perfect_deliv
            s[2] += 1.0 if delivered and not crashed else 0.0  # perfect_now
            s[3] += np.float64(ep[i, 3]) / length  # gripping
            s[4] += ep[i, 2]  # delivered
            for f in range(6):
                s[5 + f] += 1.0 if flags[f, i] else 0.0
            s[11] += np.float64(ep[i, 4]) / length  # collision_rate
            s[12] += 1.0 if crashed else 0.0  # oob
            s[13] += ep[i, 1] + ep[i, 2]  # score
            s[14] += ep[i, 0]  # episode_return
            s[15] += length  # episode_length
            stat_n[g] += 1
    return n_done


@numba.njit(cache=True)
def _k_observe(obs, pos, vel, waypoint, targets, carrying, hovered, thrust, nearest):
    """The first ``OBS_SIZE`` features of every drone (``_fill_obs``), straight into ``obs``."""
    for i in range(pos.shape[0]):
        o = obs[i]
        for k in range(3):
            p = pos[i, k]
            o[k] = vel[i, k] / _K_MAX_VEL[k]
            o[3 + k] = (p - (_K_OBS_CENTRE_Z if k == 2 else _K_ZERO)) * _K_OBS_SCALE[k]
            to_wp = waypoint[i, k] - p
            o[6 + k] = to_wp / _K_HALF_XY
            o[9 + k] = _clip1(to_wp, -_K_ONE, _K_ONE)
            o[12 + k] = (targets[i, 0, k] - p) / _K_HALF_XY
            o[15 + k] = (targets[i, 1, k] - p) / _K_HALF_XY
            o[20 + k] = thrust[i, k] / _K_HOVER_FORCE - (_K_ONE if k == 2 else _K_ZERO)
            o[23 + k] = _clip1(nearest[i, k] / _K_NEAREST_SCALE, -_K_ONE, _K_ONE)
        o[18] = _K_ONE if carrying[i] else _K_ZERO
        o[19] = _K_ONE if hovered[i] else _K_ZERO
        o[26] = pos[i, 2] / _K_CEILING


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
        compiled: step through the compiled loops (the class's default) or the NumPy
            operations; both give the same numbers.
    """

    # The compiled step covers drone_pp's own physics, task and observation; a subclass that
    # changes them in NumPy sets this to False until it compiles its own.
    compiled = True
    obs_size = OBS_SIZE
    grip_xy = GRIP_XY
    release_xy = RELEASE_XY
    spawn_low = _SPAWN_LOW
    spawn_high = _SPAWN_HIGH
    spawn_fields = _SPAWN_FIELDS
    task_fields = _TASK_FIELDS

    def __init__(self, num_envs: int = 8, num_drones: int = 16, report_interval: int = 64,
                 seed: int = 0, buf=None, groups: int = 1, compiled: bool | None = None):
        if compiled is not None:
            self.compiled = bool(compiled)
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
        self._sq2 = np.zeros_like(self._dist2)
        self._diff = np.zeros((self.n_arenas, self.num_drones, self.num_drones, 3), f32)
        self._marks = np.zeros((3, n), bool)  # near, hovered, descending
        self._phase = np.zeros((2, 1, n), bool)  # empty, carrying
        self._new_flags = np.zeros((2, 3, n), bool)
        self._flags3 = self._flags_t.reshape(2, 3, n)
        # Observations are built feature-major (every operation runs along the drones), then
        # transposed into PufferLib's (agents, features) buffer with one copy.
        self._obs_t = np.zeros((self.obs_size, n), f32)
        # The compiled step's drone lists (deliveries, then ends) and its float32 windows.
        self._idx = np.zeros(n, np.int64)
        self._grip_xy32 = np.float32(self.grip_xy)
        self._release_xy32 = np.float32(self.release_xy)

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
        if self.compiled:
            return self._step_compiled(actions)
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

    # A subclass that drops carried boxes on collision (drone_pp_hard) says so here.
    drops_boxes_on_collision = False

    def _step_compiled(self, actions):
        """``step`` through the compiled loops; the same numbers as the NumPy step."""
        self._fly_compiled(np.ascontiguousarray(actions, np.float32).reshape(self.num_agents, 3))
        _k_neighbours(self.pos, self.num_drones, self.nearest, self.collided)
        n = _k_pick_and_place(self.pos, self.vel, self._targets, self.carrying, self.hovered, self.waypoint,
                              self.prev_dist, self._ep, self._flags_t, self.collided, self.rewards,
                              self._grip_xy32, self._release_xy32, self.drops_boxes_on_collision, self._idx)
        if n:
            self._new_task(self._idx[:n].copy())
        n = _k_settle(self.pos, self.carrying, self.waypoint, self.prev_dist, self.ep_len, self._ep, self._flags_t,
                      self.rewards, self.terminals, self.truncations, self.group_agents, self._stats,
                      self._stat_n, self._idx)
        if n:
            done = self._idx[:n].copy()
            self._respawn(done)
            self.nearest[done] = 0.0  # unknown until the next step's neighbour search
        self._observe()
        self._tick += 1
        infos = self._reports() if self._tick % self.report_interval == 0 else []
        return self.observations, self.rewards, self.terminals, self.truncations, infos

    def _fly_compiled(self, actions: np.ndarray) -> None:
        """``_fly`` through the compiled loop, the actions clipped into ``self._act`` on the way."""
        _k_fly(actions, self._act, self.pos, self.vel, self.thrust, self.carrying, self.box_mass)

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
        diff = np.subtract(p[:, None, :, :], p[:, :, None, :], out=self._diff)  # [e, i, j] = p_j - p_i
        dist2 = np.square(diff[..., 0], out=self._dist2)
        dist2 += np.square(diff[..., 1], out=self._sq2)
        dist2 += np.square(diff[..., 2], out=self._sq2)
        dist2.reshape(self.n_arenas, d * d)[:, :: d + 1] = np.inf
        j = np.argmin(dist2, axis=2).reshape(-1)
        j += self._arena_base
        np.take(self.pos, j, axis=0, out=self.nearest)
        self.nearest -= self.pos
        np.less(np.einsum("ij,ij->i", self.nearest, self.nearest), COLLISION_RADIUS ** 2, out=self.collided)

    def _observe(self) -> None:
        if self.compiled:
            _k_observe(self.observations, self.pos, self.vel, self.waypoint, self._targets, self.carrying,
                       self.hovered, self.thrust, self.nearest)
            return
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


def compile_step() -> None:
    """Compile the compiled step's loops (or load them from numba's on-disk cache) now, by
    stepping a two-drone env once: a process that forks trainings does this once for all."""
    env = DronePP(num_envs=1, num_drones=2, seed=0)
    env.reset(0)
    env.step(np.zeros((2, 3), np.float32))


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
