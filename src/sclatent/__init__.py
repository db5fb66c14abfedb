"""sclatent: fast deep generative models for single-cell RNA-seq, in scanpy's style."""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sclatent")
except PackageNotFoundError:  # pragma: no cover - not installed
    __version__ = "0.0.0"

# isort: split
# first, so that no dependency imports tqdm.auto before it is made quiet
from . import _progress  # noqa: F401

# isort: split
from . import datasets, pl, pp, tl

# torch, Lightning and scvi-tools take seconds to import: the modules that need them are
# imported on first use (``sl.models``, ``sl.Autoencoder``, or the first ``sl.tl.autoencode``).
_LAZY = ("models", "module", "nn", "train")

__all__ = ["Autoencoder", "datasets", "models", "module", "nn", "pl", "pp", "tl", "train"]


def __getattr__(name: str):
    if name in _LAZY:
        return import_module(f".{name}", __name__)
    if name == "Autoencoder":
        return import_module(".models", __name__).Autoencoder
    msg = f"module {__name__!r} has no attribute {name!r}; pick one of {__all__}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
