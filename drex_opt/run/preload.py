"""What a warm training server imports once, so each forked run starts at once.

Importing this module is its purpose (see :mod:`drex_opt.run.forkserver`): torch, the parts of
it PuffeRL pulls in lazily on its first optimiser (``torch._dynamo``, ~1.8 s), PufferLib's
trainer and vectorisation, and the built-in envs with drone_pp's compiled step. It also makes the server pass for the
caller's main script (:func:`adopt_callers_main`).
"""

import json
import os
import sys
import warnings
from importlib.machinery import ModuleSpec

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # torch.cuda warns about optional packages on import
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401
    import torch.optim  # noqa: F401
    import pufferlib  # noqa: F401
    import pufferlib.models  # noqa: F401
    import pufferlib.pufferl  # noqa: F401
    import pufferlib.pytorch  # noqa: F401
    import pufferlib.vector  # noqa: F401

from drex_opt.envs import drone_pp, drone_pp_hard  # noqa: F401, E402
from drex_opt.run import train  # noqa: F401, E402
from drex_opt.run.forkserver import MAIN_ENV  # noqa: E402

drone_pp.compile_step()


def adopt_callers_main() -> None:
    """Make the server's ``__main__`` look like the caller's main script.

    Every forked child runs multiprocessing's ``spawn.prepare``, which re-runs the caller's
    main script as ``__mp_main__`` (for ``drex-opt``: the CLI and typer, ~0.17 s a trial)
    unless the child's ``__main__`` already has that file or module name. Python 3.11's
    forkserver never imports it for the server (its ``"__main__"`` preload reads a key the
    preparation data does not carry), and the children need nothing from it: their target
    and arguments live in this package. So the server takes on the name instead.
    """
    caller = json.loads(os.environ.pop(MAIN_ENV, "{}") or "{}")
    main = sys.modules["__main__"]
    if caller.get("path"):
        main.__file__ = caller["path"]
    if caller.get("name"):
        main.__spec__ = ModuleSpec(caller["name"], None)


adopt_callers_main()
