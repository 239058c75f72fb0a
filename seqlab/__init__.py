"""seqlab: sequence models with a parallel face for training and a recurrent
face for inference, proven equal by tests."""

import importlib

__version__ = "0.1.0"

__all__ = ["config", "decoding", "mixers", "models", "state", "__version__"]


def __getattr__(name: str):
    # Submodules load on first use, so that `seqlab --help` and a Ctrl-C during start-up
    # happen before torch is imported (the command line reports both without a traceback).
    if name in __all__:
        return importlib.import_module(f"seqlab.{name}")
    raise AttributeError(f"module 'seqlab' has no attribute {name!r}")
