"""A classifier on single-cell counts as a plain :class:`torch.nn.Module`: log-normalisation (or a frozen encoder) inside, so gradients are per gene."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import MLP
from ._autoencoder import _TARGET_SUM, AutoencoderConfig, AutoencoderModule, LossOutput


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
    encoder
        The :class:`~sclatent.module.AutoencoderConfig` (as a dict) of a trained autoencoder
        whose encoder, frozen, turns the counts into the latent that the hidden layers read;
        ``None`` reads log-normalised counts.
    """

    n_genes: int
    n_classes: int
    n_hidden: int = 128
    n_layers: int = 1
    dropout_rate: float = 0.2
    norm: str = "layer"
    encoder: dict | None = None

    def to_dict(self) -> dict:
        """Return a JSON-serialisable copy."""
        return asdict(self)


class ClassifierModule(nn.Module):
    """Raw counts → ``log1p`` of counts per 10,000 (or a frozen encoder's latent) → hidden layers → class logits.

    The normalisation, and the encoder when there is one, are part of the module, so that the
    input is the raw counts and gradient-based attributions are per gene. A batch is a dict with
    ``"x"`` (cells × genes, counts), ``"library"`` (cells × 1, total counts), ``"cat"`` and
    ``"cont"`` (the covariates, which the encoder may read) and, for training, ``"y"`` (class codes).

    :meth:`forward` returns a :class:`~sclatent.module.LossOutput` (cross-entropy per cell as
    ``reconstruction``, zeros as ``kl``), so that :class:`~sclatent.train.TrainingPlan` trains it
    as it trains the autoencoder.

    Parameters
    ----------
    config
        The hyperparameters.
    encoder
        The trained autoencoder module whose encoder is used when ``config.encoder`` is set; it
        is copied and frozen (no gradient, normalisation statistics and dropout in evaluation
        mode). ``None`` with ``config.encoder`` set builds an untrained one, for loading weights.
    """

    def __init__(self, config: ClassifierConfig, encoder: AutoencoderModule | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder: AutoencoderModule | None = None
        if config.encoder is not None:
            self.encoder = (
                copy.deepcopy(encoder)
                if encoder is not None
                else AutoencoderModule(AutoencoderConfig.from_dict(config.encoder))
            )
            self.encoder.requires_grad_(False)
            self.encoder.eval()
        self.body = MLP(
            config.n_genes if self.encoder is None else self.encoder.config.n_latent,
            config.n_hidden,
            n_layers=config.n_layers,
            dropout_rate=config.dropout_rate,
            norm=config.norm,
        )
        self.head = nn.Linear(config.n_hidden, config.n_classes)
        #: Divides the logits (temperature scaling, set by calibration; 1 is none).
        self.register_buffer("temperature", torch.ones(()))

    def train(self, mode: bool = True) -> ClassifierModule:
        """Set training mode; the frozen encoder stays in evaluation mode."""
        super().train(mode)
        if self.encoder is not None:
            self.encoder.eval()
        return self

    def covariates(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Return the covariates the encoder reads (``None`` without an encoder, or one that reads none)."""
        if self.encoder is None or not self.encoder.config.encode_covariates:
            return None
        return self.encoder.covariates(batch)

    def model_input(self, x: torch.Tensor, library: torch.Tensor | None = None) -> torch.Tensor:
        """Return the per-gene input of the network: log-normalised counts, or what the encoder's first layer sees."""
        if self.encoder is None:
            return self.normalize(x, library)
        return self.encoder.encoder_input(x, library)

    @staticmethod
    def normalize(x: torch.Tensor, library: torch.Tensor | None = None) -> torch.Tensor:
        """``log1p`` of counts per 10,000 (``library``: each cell's total, by default summed from ``x``)."""
        total = x.sum(-1, keepdim=True) if library is None else library
        return torch.log1p(x * (_TARGET_SUM / total.clamp_min(1.0)))

    def logits(
        self, x: torch.Tensor, library: torch.Tensor | None = None, cov: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Class logits (cells × classes), divided by the temperature, from raw counts ``x``."""
        return self.logits_from_input(self.model_input(x, library), cov)

    def logits_from_input(self, h: torch.Tensor, cov: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits from the per-gene input ``h`` (see :meth:`model_input`) and the encoder's covariates ``cov``."""
        if self.encoder is not None:
            h = self.encoder.latent(self.encoder.encode_input(h, cov)[0])
        return self.head(self.body(h)) / self.temperature

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> LossOutput:
        """Cross-entropy of the batch's classes ``batch["y"]``."""
        logits = self.logits(batch["x"], batch["library"], self.covariates(batch))
        ce = F.cross_entropy(logits, batch["y"], reduction="none")
        return LossOutput(ce.mean(), ce, torch.zeros_like(ce))
