"""Backbones built from registered mixers, and their checkpoints."""

from seqlab.models.io import CheckpointError, load, save
from seqlab.models.lm import LM, LMConfig, LMState, build_lm

__all__ = ["LM", "LMConfig", "LMState", "CheckpointError", "build_lm", "load", "save"]
