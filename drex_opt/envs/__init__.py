"""Environments bundled with drex-opt."""

#: The default built-in environment's name (``--env``), always available.
BUILTIN_ENV = "drone_pp"
#: Every built-in environment's ``--env`` name, also its module under ``drex_opt.envs`` (each
#: has ``make`` and ``make_batched``, the same log keys and the same batch-size rules).
BUILTIN_ENVS = ("drone_pp", "drone_pp_hard")
