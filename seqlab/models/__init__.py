"""Backbones built from registered mixers, and their checkpoints."""

from seqlab.errors import CheckpointError
from seqlab.models.block_lm import BlockLM, BlockLMConfig
from seqlab.models.encdec import EncDec, EncDecConfig
from seqlab.models.hat import HAT, HATConfig
from seqlab.models.hmt import HMT, HMTConfig
from seqlab.models.hnet import HNet, HNetConfig
from seqlab.models.io import load, save
from seqlab.models.kinds import MODELS
from seqlab.models.lm import LM, LMConfig, LMState, build_lm
from seqlab.models.pretrained import load_pretrained

__all__ = ["LM", "LMConfig", "LMState", "MODELS", "BlockLM", "BlockLMConfig", "CheckpointError",
           "EncDec", "EncDecConfig",
           "HAT", "HATConfig",
           "HMT", "HMTConfig",
           "HNet", "HNetConfig",
           "build_lm", "load", "load_pretrained", "save"]
