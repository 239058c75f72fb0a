"""seqlab: sequence models with a parallel face for training and a recurrent
face for inference, proven equal by tests."""

from seqlab import config, mixers, state

__version__ = "0.1.0"

__all__ = ["config", "mixers", "state", "__version__"]
