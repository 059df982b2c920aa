"""The errors of the pretrained-weights machinery, in a module of their own so that :mod:`instantsr.ncnn`
raises them without importing :mod:`instantsr.weights` (which re-exports them: catch ``weights.WeightsError``)."""

from __future__ import annotations

__all__ = ["WeightsError", "WeightsHashError", "WeightsNotFoundError"]


class WeightsError(RuntimeError):
    """A pretrained file could not be fetched or converted."""


class WeightsHashError(WeightsError):
    """A downloaded archive does not have its pinned sha256."""


class WeightsNotFoundError(FileNotFoundError):
    """The converted weights are not in the cache."""
