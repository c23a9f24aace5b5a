"""When a run's drone is not worth continuing: its policy acts more randomly than fresh weights.

A learning rate far too large (or a similar blow-up) can drive a policy's action spread far
beyond where training starts: the drone then flies at random and PPO's small steps take
longer to narrow it again than a fresh start takes to learn. Measured on the built-in env
(1M agent steps at learning rate 0.5): the mean action entropy rose from 4.26 (fresh
weights) to 10–13, and 2M further steps at the baseline's learning rate left it at 13.3,
with no grip. Healthy runs sit at or below the fresh weights' entropy (4.26 after 100k
steps, 2.8–4.1 later), so the margin only has to separate a blow-up from noise.
"""

from __future__ import annotations

# Nats of mean action entropy above fresh weights': e ≈ 2.7 times the spread of untrained
# actions. A discrete policy starts near its maximum entropy and never crosses it.
MARGIN_NATS = 1.0


def reason(entropy: float | None, fresh_entropy: float | None) -> str | None:
    """Why the policy is not worth continuing: it acts more randomly than fresh weights by
    more than :data:`MARGIN_NATS` (None when it does not, or when either entropy is unknown:
    nothing measured, nothing judged). One sentence, for notes and warnings."""
    if entropy is None or fresh_entropy is None or entropy <= fresh_entropy + MARGIN_NATS:
        return None
    return (f"its policy acts more randomly than fresh weights (mean action entropy {entropy:.2f} against "
            f"{fresh_entropy:.2f})")
