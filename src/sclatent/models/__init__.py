"""Model classes."""

from importlib import import_module

from ._setup import MIN_CELLS, DataSetup

__all__ = [
    "MIN_CELLS",
    "Autoencoder",
    "Classifier",
    "DataSetup",
    "default_kl_warmup_epochs",
    "default_max_epochs",
    "default_precision",
]


def __getattr__(name: str):
    # the model classes import torch and Lightning: only when first asked for (see sclatent/__init__.py)
    if name in ("Autoencoder", "default_kl_warmup_epochs", "default_max_epochs", "default_precision"):
        return getattr(import_module("._autoencoder", __name__), name)
    if name == "Classifier":
        return import_module("._classifier", __name__).Classifier
    msg = f"module {__name__!r} has no attribute {name!r}; pick one of {__all__}"
    raise AttributeError(msg)
