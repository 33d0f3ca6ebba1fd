"""Exception and warning types raised by paddlefix."""

from __future__ import annotations

__all__ = ["PaddlefixWarning", "PatchError", "ConfigError"]


class PaddlefixWarning(UserWarning):
    """Category of every warning paddlefix emits.

    Filter it like any other category, e.g.
    ``warnings.simplefilter("error", paddlefix.PaddlefixWarning)``.
    """


class ConfigError(ValueError):
    """A setting (environment variable or argument) has an unknown name or value."""


class PatchError(RuntimeError):
    """Raised by ``apply(strict=True)`` when a requested patch cannot apply."""
