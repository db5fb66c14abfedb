from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: The normalisations of the hidden layers.
NORMS = ("batch", "layer", "none")


def check_norm(norm: str) -> None:
    """Raise unless ``norm`` is one of :data:`NORMS`."""
    if norm not in NORMS:
        msg = f"norm must be one of {list(NORMS)}, got {norm!r}; pass one of them."
        raise ValueError(msg)


def check_layers(*, dropout_rate: float, **sizes: int) -> None:
    """Raise unless every size is an integer ≥ 1 and ``dropout_rate`` is in [0, 1)."""
    for name, value in sizes.items():
        if not isinstance(value, int | np.integer) or value < 1:
            msg = f"{name} must be an integer ≥ 1, got {value!r}."
            raise ValueError(msg)
    if not 0 <= dropout_rate < 1:
        msg = f"dropout_rate must be in [0, 1), got {dropout_rate!r}."
        raise ValueError(msg)


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` in float32 when mixed precision made it bfloat16 or float16, else unchanged.

    With ``precision="bf16-mixed"`` autocast runs the matrix products in bfloat16. Apply this
    to a layer's output wherever a distribution's parameters, a variance or a loss is built
    from it (custom likelihoods too: ``full_precision(self.my_layer(h))``), so that those stay
    in float32.
    """
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


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

    def expand_covariates(self, sources: list[list[int]]) -> None:
        """Widen the covariate input of every layer to ``len(sources)`` columns, in place (architecture surgery).

        New column ``j`` gets the weights of the old covariate columns ``sources[j]``: one
        column to keep it, several to start from their mean (e.g. a new batch from the known
        batches), none to start from zero. Every other weight is kept as it was.

        The caller knows which columns are new (see
        :meth:`~sclatent.module.AutoencoderModule.with_categories`).
        """
        if not self.n_cov:
            return
        for layer in self.layers:
            old = layer[0]
            n_prev = old.in_features - self.n_cov
            linear = nn.Linear(n_prev + len(sources), old.out_features).to(old.weight.device, old.weight.dtype)
            with torch.no_grad():
                linear.bias.copy_(old.bias)
                linear.weight.zero_()
                linear.weight[:, :n_prev] = old.weight[:, :n_prev]
                cov = old.weight[:, n_prev:]
                for j, src in enumerate(sources):
                    if src:
                        linear.weight[:, n_prev + j] = cov[:, src].mean(dim=1)
            layer[0] = linear
        self.n_cov = len(sources)

    def covariate_weights(self) -> list[tuple[nn.Parameter, int]]:
        """Each layer's weight with the position of its first covariate column (covariates come last)."""
        if not self.n_cov:
            return []
        return [(layer[0].weight, layer[0].in_features - self.n_cov) for layer in self.layers]

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
        return full_precision(self.mean(h)), torch.exp(full_precision(self.log_var(h))) + self.var_eps
