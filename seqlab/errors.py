"""Errors shared across layers (so that a low layer can raise what the CLI reports)."""


class CheckpointError(ValueError):
    """A checkpoint, model file or tokenizer file that is missing, truncated, corrupt or of
    another model."""
