"""Environments bundled with drex-opt."""

#: The built-in environment's name (``--env``), always available.
BUILTIN_ENV = "drone_pp"
