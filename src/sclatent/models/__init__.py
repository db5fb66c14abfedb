"""Model classes."""

from ._autoencoder import Autoencoder, default_max_epochs
from ._setup import MIN_CELLS, DataSetup

__all__ = ["MIN_CELLS", "Autoencoder", "DataSetup", "default_max_epochs"]
