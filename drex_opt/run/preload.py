"""What a warm training server imports once, so each forked run starts at once.

Importing this module is its purpose (see :mod:`drex_opt.run.forkserver`): torch, the parts of
it PuffeRL pulls in lazily on its first optimiser (``torch._dynamo``, ~1.8 s), PufferLib's
trainer and vectorisation, and the built-in envs.
"""

import warnings

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
