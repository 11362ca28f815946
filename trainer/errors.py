"""Errors of the trainer: bad settings, missing models, empty windows, failed publishes."""

from __future__ import annotations

from schemas.errors import FlywheelError


class TrainerError(FlywheelError):
    """Base class of the trainer's errors."""


class TrainerConfigError(TrainerError):
    """The trainer's settings or arguments cannot work; found before any work started."""


class BaseModelMissingError(TrainerConfigError):
    """The base model folder does not exist or is not a Hugging Face causal LM."""


class EmptyWindowError(TrainerError):
    """The window selects no trainable examples (or none for validation)."""


class CorpusMissingError(TrainerError):
    """The chatterbot-corpus package, which the embedded base model is built from, is absent."""


class PublishError(TrainerError):
    """An adapter passed the gate but could not be written, recorded or announced."""


class RankFailedError(TrainerError):
    """Rank 0 failed in a step the other training processes waited on; they stop with it."""


class RanksDivergedError(TrainerError):
    """The training processes ended with different LoRA weights (a DDP or FSDP fault)."""
