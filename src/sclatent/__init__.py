"""sclatent: fast deep generative models for single-cell RNA-seq, in scanpy's style."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sclatent")
except PackageNotFoundError:  # pragma: no cover - not installed
    __version__ = "0.0.0"

# isort: split
# first, so that no dependency imports tqdm.auto before it is made quiet
from . import _progress  # noqa: F401

# isort: split
from . import datasets, models, module, nn, pl, pp, tl, train
from .models import Autoencoder

__all__ = ["Autoencoder", "datasets", "models", "module", "nn", "pl", "pp", "tl", "train"]
