"""A classifier on single-cell counts as a plain :class:`torch.nn.Module`: log-normalisation inside, so gradients are per gene."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import MLP
from ._autoencoder import _TARGET_SUM, LossOutput


@dataclass
class ClassifierConfig:
    """Hyperparameters of :class:`~sclatent.module.ClassifierModule`; saved with every model file.

    Parameters
    ----------
    n_genes
        Number of input genes.
    n_classes
        Number of classes.
    n_hidden
        Width of the hidden layers.
    n_layers
        Hidden layers.
    dropout_rate
        Dropout after each hidden layer.
    norm
        Normalisation of the hidden layers: ``"batch"``, ``"layer"`` or ``"none"``.
    """

    n_genes: int
    n_classes: int
    n_hidden: int = 128
    n_layers: int = 1
    dropout_rate: float = 0.2
    norm: str = "layer"

    def to_dict(self) -> dict:
        """Return a JSON-serialisable copy."""
        return asdict(self)


class ClassifierModule(nn.Module):
    """Raw counts → ``log1p`` of counts per 10,000 → hidden layers → class logits.

    The normalisation is part of the module, so that the input is the raw counts and
    gradient-based attributions are per gene. A batch is a dict with ``"x"`` (cells × genes,
    counts), ``"library"`` (cells × 1, total counts) and, for training, ``"y"`` (class codes).

    :meth:`forward` returns a :class:`~sclatent.module.LossOutput` (cross-entropy per cell as
    ``reconstruction``, zeros as ``kl``), so that :class:`~sclatent.train.TrainingPlan` trains it
    as it trains the autoencoder.

    Parameters
    ----------
    config
        The hyperparameters.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.body = MLP(
            config.n_genes,
            config.n_hidden,
            n_layers=config.n_layers,
            dropout_rate=config.dropout_rate,
            norm=config.norm,
        )
        self.head = nn.Linear(config.n_hidden, config.n_classes)
        #: Divides the logits (temperature scaling, set by calibration; 1 is none).
        self.register_buffer("temperature", torch.ones(()))

    def logits(self, x: torch.Tensor, library: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits (cells × classes), divided by the temperature, from raw counts ``x``."""
        return self.logits_from_input(self.normalize(x, library))

    @staticmethod
    def normalize(x: torch.Tensor, library: torch.Tensor | None = None) -> torch.Tensor:
        """``log1p`` of counts per 10,000 (``library``: each cell's total, by default summed from ``x``)."""
        total = x.sum(-1, keepdim=True) if library is None else library
        return torch.log1p(x * (_TARGET_SUM / total.clamp_min(1.0)))

    def logits_from_input(self, h: torch.Tensor) -> torch.Tensor:
        """Class logits from log-normalised expression ``h`` (see :meth:`normalize`)."""
        return self.head(self.body(h)) / self.temperature

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> LossOutput:
        """Cross-entropy of the batch's classes ``batch["y"]``."""
        ce = F.cross_entropy(self.logits(batch["x"], batch["library"]), batch["y"], reduction="none")
        return LossOutput(ce.mean(), ce, torch.zeros_like(ce))
