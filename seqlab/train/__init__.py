"""Training: the trainer loop, run configuration, checkpoints, data parallelism."""

from seqlab.train.config import RunConfig, TrainConfig
from seqlab.train.trainer import Trainer, TrainResult, evaluate, train

__all__ = ["RunConfig", "TrainConfig", "Trainer", "TrainResult", "evaluate", "train"]
