"""Real data sets bundled with the package."""

from ._datasets import paul15, pbmc3k

__all__ = ["paul15", "pbmc3k"]
