from __future__ import annotations

import torch
from torch import nn

#: The normalisations of the hidden layers.
NORMS = ("batch", "layer", "none")


def check_norm(norm: str) -> None:
    """Raise unless ``norm`` is one of :data:`NORMS`."""
    if norm not in NORMS:
        msg = f"norm must be one of {list(NORMS)}, got {norm!r}; pass one of them."
        raise ValueError(msg)


class MLP(nn.Module):
    """Fully connected layers that take the covariates as extra inputs to every layer.

    Each layer is ``Linear → BatchNorm (or LayerNorm) → ReLU → Dropout``. The covariate vector
    (one-hot batch and categorical covariates, standardised continuous covariates) is
    concatenated to the input of each layer, so that the network can model technical
    effects at every depth (like scvi-tools' ``FCLayers`` with ``inject_covariates=True``).

    Parameters
    ----------
    n_in
        Number of input features.
    n_out
        Width of every layer.
    n_cov
        Length of the covariate vector; 0 for none.
    n_layers
        Number of layers.
    dropout_rate
        Dropout after each layer.
    norm
        ``"batch"``, ``"layer"`` or ``"none"``.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        *,
        n_cov: int = 0,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        check_norm(norm)
        self.n_cov = n_cov
        layers = []
        for i in range(n_layers):
            block = [nn.Linear((n_in if i == 0 else n_out) + n_cov, n_out)]
            if norm == "batch":
                block.append(nn.BatchNorm1d(n_out, momentum=0.01, eps=1e-3))
            elif norm == "layer":
                block.append(nn.LayerNorm(n_out, elementwise_affine=False))
            block += [nn.ReLU()]
            if dropout_rate > 0:
                block.append(nn.Dropout(dropout_rate))
            layers.append(nn.Sequential(*block))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, cov: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the layers, feeding ``cov`` (cells × n_cov) to each one."""
        for layer in self.layers:
            if self.n_cov:
                x = torch.cat([x, cov], dim=-1)
            x = layer(x)
        return x


class Encoder(nn.Module):
    """Map expression and covariates to the mean and variance of a Gaussian latent.

    Parameters
    ----------
    n_in
        Number of genes.
    n_latent
        Latent dimensions.
    n_hidden
        Width of the hidden layers.
    n_cov
        Length of the covariate vector.
    n_layers
        Number of hidden layers.
    dropout_rate
        Dropout in the hidden layers.
    norm
        Normalisation of the hidden layers, see :class:`MLP`.
    var_eps
        Added to the variance for numerical stability.
    """

    def __init__(
        self,
        n_in: int,
        n_latent: int,
        *,
        n_hidden: int = 128,
        n_cov: int = 0,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        norm: str = "batch",
        var_eps: float = 1e-4,
    ) -> None:
        super().__init__()
        self.body = MLP(n_in, n_hidden, n_cov=n_cov, n_layers=n_layers, dropout_rate=dropout_rate, norm=norm)
        self.mean = nn.Linear(n_hidden, n_latent)
        self.log_var = nn.Linear(n_hidden, n_latent)
        self.var_eps = var_eps

    def forward(self, x: torch.Tensor, cov: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the latent mean and variance (cells × n_latent each)."""
        h = self.body(x, cov)
        return self.mean(h), torch.exp(self.log_var(h)) + self.var_eps
