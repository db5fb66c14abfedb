"""Neural-network building blocks."""

from ._base import MLP, Encoder

__all__ = ["MLP", "Encoder"]
