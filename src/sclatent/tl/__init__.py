"""Tools: models trained on, and analyses run on, an AnnData."""

from ._autoencode import autoencode

__all__ = ["autoencode"]
