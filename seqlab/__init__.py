"""seqlab: sequence models with a parallel face for training and a recurrent
face for inference, proven equal by tests."""

from seqlab import config, decoding, mixers, models, state

__version__ = "0.1.0"

__all__ = ["config", "decoding", "mixers", "models", "state", "__version__"]
