"""Neural-network building blocks."""

from ._base import MLP, Encoder, full_precision

__all__ = ["MLP", "Encoder", "full_precision"]
