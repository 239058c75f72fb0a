"""Training: the trainer loop, run configuration, checkpoints, data parallelism."""

from seqlab.train.config import RunConfig, TrainConfig
from seqlab.train.optim import OptimizerConfig, lr_at, make_optimizer, optimizer_step
from seqlab.train.trainer import Trainer, TrainResult, evaluate, train

__all__ = ["OptimizerConfig", "RunConfig", "TrainConfig", "Trainer", "TrainResult", "evaluate",
           "lr_at", "make_optimizer", "optimizer_step", "train"]
