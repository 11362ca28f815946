"""Errors of the inference package, all under `InferenceError`."""

from __future__ import annotations

from schemas.errors import FlywheelError


class InferenceError(FlywheelError):
    """Base class of every inference error."""


class RepositoryError(InferenceError):
    """The model repository is missing, malformed, or a version cannot be written."""


class VersionExistsError(RepositoryError):
    """A version folder already exists; versions are immutable, publish a new number."""


class VersionNotFoundError(RepositoryError):
    """The model has no complete version with that number."""


class SwapError(InferenceError):
    """A new version could not be loaded, readied or warmed up; the old one still serves."""


class TritonUnavailableError(InferenceError):
    """Triton cannot be reached or has no ready version of the model."""


class BadRequestError(InferenceError):
    """A request is malformed (empty prompt, wrong type, over the context)."""


class ServingStatusError(InferenceError):
    """model_versions could not be read or written; the swap itself is not affected."""


class CanaryError(InferenceError):
    """A canary could not be started, observed or ended; the live version keeps serving."""
