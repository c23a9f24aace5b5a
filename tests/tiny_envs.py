"""Tiny envs for the tests of foreign envs (``--env tiny_envs:GripDeliverOnly``).

``GripDeliverOnly`` is a PufferLib env that PufferLib does not register. Like the public
drone_delivery version that logs no ``perfect_now``, it reports grip and delivery only.
The task is a one-dimensional pick and place. Each agent starts at 0 and moves by its
action, rewarded for progress towards its next goal. Reaching +0.5 grips; coming back to -0.5 after a grip delivers, which ends the
episode. A random policy grips now and then, and a trained one does both.

It counts its agents with ``num_agents`` and reports every ``report_interval`` ticks, so it
exercises the agent-count mapping and the report-interval rule as well.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pufferlib

HORIZON = 32


class GripDeliverOnly(pufferlib.PufferEnv):
    def __init__(self, num_agents: int = 64, report_interval: int = 1, buf=None, seed: int = 0):
        self.single_observation_space = gymnasium.spaces.Box(low=-2, high=2, shape=(3,), dtype=np.float32)
        self.single_action_space = gymnasium.spaces.Box(low=-1, high=1, shape=(1,), dtype=np.float32)
        self.num_agents = num_agents
        self.report_interval = report_interval
        super().__init__(buf)
        self.rng = np.random.default_rng(seed)
        self.pos = np.zeros(num_agents, np.float32)
        self.gripped = np.zeros(num_agents, bool)
        self.t = np.zeros(num_agents, np.int32)
        self.tick = 0
        self.done_n = self.grip_n = self.deliv_n = 0

    def _obs(self) -> None:
        self.observations[:, 0] = self.pos
        self.observations[:, 1] = self.gripped
        self.observations[:, 2] = self.t / HORIZON

    def reset(self, seed=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.pos[:] = 0
        self.gripped[:] = False
        self.t[:] = 0
        self._obs()
        return self.observations, []

    def step(self, actions):
        move = np.clip(np.asarray(actions, np.float32).reshape(self.num_agents), -1, 1) * 0.2
        before = np.abs(self.pos - np.where(self.gripped, -0.5, 0.5))
        self.pos = np.clip(self.pos + move + self.rng.normal(0, 0.02, self.num_agents).astype(np.float32), -1, 1)
        self.t += 1
        grip = ~self.gripped & (self.pos >= 0.5)
        deliver = self.gripped & (self.pos <= -0.5)
        progress = before - np.abs(self.pos - np.where(self.gripped, -0.5, 0.5))
        self.gripped |= grip
        self.rewards[:] = progress + grip * 1.0 + deliver * 1.0
        end = deliver | (self.t >= HORIZON)
        self.terminals[:] = deliver
        self.truncations[:] = end & ~deliver
        self.done_n += int(end.sum())
        self.grip_n += int((end & (self.gripped | deliver)).sum())
        self.deliv_n += int(deliver.sum())
        self.pos[end] = 0
        self.gripped[end] = False
        self.t[end] = 0
        self._obs()
        self.tick += 1
        info = []
        if self.tick % self.report_interval == 0 and self.done_n:
            info.append({"perfect_grip": self.grip_n / self.done_n, "perfect_deliv": self.deliv_n / self.done_n,
                         "n": float(self.done_n)})
            self.done_n = self.grip_n = self.deliv_n = 0
        return self.observations, self.rewards, self.terminals, self.truncations, info


    def close(self):
        pass


class ReportsRarely(GripDeliverOnly):
    """Reports every 100,000 ticks and takes no report interval: short runs never see a statistic."""

    def __init__(self, num_agents: int = 64, buf=None, seed: int = 0):
        super().__init__(num_agents=num_agents, report_interval=100_000, buf=buf, seed=seed)


class NotAnEnv:
    """Importable, but not a PufferEnv."""
