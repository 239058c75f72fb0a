"""seqlab: sequence models with a parallel face for training and a recurrent
face for inference, proven equal by tests."""

import importlib
import os
import sys

# torch's OpenMP (libgomp) lets idle worker threads sleep almost at once here; a decode step
# runs some 150 short parallel regions, and waking the workers for each cost 10-30 us (a
# third of a SmolLM2 step at 2 threads). Spinning 300,000 rounds first (libgomp's own
# default where it does not throttle) keeps them awake between regions, and asleep after a
# few milliseconds idle. It only takes effect before torch loads; set it yourself otherwise.
if "torch" not in sys.modules:
    os.environ.setdefault("GOMP_SPINCOUNT", "300000")

__version__ = "0.1.0"

__all__ = ["config", "decoding", "mixers", "models", "state", "__version__"]


def __getattr__(name: str):
    # Submodules load on first use, so that `seqlab --help` and a Ctrl-C during start-up
    # happen before torch is imported (the command line reports both without a traceback).
    if name in __all__:
        return importlib.import_module(f"seqlab.{name}")
    raise AttributeError(f"module 'seqlab' has no attribute {name!r}")
