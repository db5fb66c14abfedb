"""The autoencoder as a plain :class:`torch.nn.Module`: encode, decode, loss. No AnnData, no Lightning."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import MLP, Encoder
from ._likelihoods import get_likelihood

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from torch.distributions import Distribution


#: Counts per cell that ``normalize_input`` scales each cell to (scanpy's ``normalize_total`` convention).
_TARGET_SUM = 1e4

#: Settings that model files of sclatent 0.1 do not record, with the behaviour those models were trained with.
SETTINGS_BEFORE_SAVED = {"norm": "batch", "encode_covariates": True, "normalize_input": False, "rescale_latent": False}

#: At most this many values (n_latent × cells × genes) are held at once by :meth:`AutoencoderModule.expression_gram`.
_GRAM_VALUES = 2**24


@dataclass
class AutoencoderConfig:
    """Hyperparameters of :class:`~sclatent.module.AutoencoderModule`; saved with every model file.

    Parameters
    ----------
    n_genes
        Number of genes (input and output features).
    n_latent
        Dimensions of the latent space.
    n_hidden
        Width of the hidden layers.
    n_layers
        Hidden layers in the encoder and in the decoder.
    dropout_rate
        Dropout in the encoder's hidden layers.
    likelihood
        Name of a registered likelihood, see :func:`sclatent.module.available_likelihoods`.
    variational
        A VAE (Gaussian posterior, KL to a standard normal prior) or a deterministic autoencoder.
    n_categories
        Number of categories of each categorical covariate, the batch first.
    n_continuous
        Number of continuous covariates.
    norm
        Normalisation of the hidden layers: ``"batch"``, ``"layer"`` or ``"none"``.
    encode_covariates
        Feed the covariates to the encoder as well as to the decoder. With ``False`` only the
        decoder sees them (scvi-tools' default), so the encoder must explain each cell
        without knowing its batch.
    normalize_input
        For count likelihoods, scale each cell's counts to 10,000 before the encoder's
        ``log1p`` (log-normalised input, as for PCA), so that the latent does not have to carry
        the library size, which the decoder is given anyway. ``False`` feeds ``log1p`` of the
        raw counts.
    rescale_latent
        Express the latent in the decoder's metric: :meth:`~sclatent.module.AutoencoderModule.latent`
        returns the posterior mean times ``latent_axes`` (a buffer of the module),
        which :meth:`sclatent.models.Autoencoder.fit` sets from the decoder at its end (see
        :meth:`~sclatent.module.AutoencoderModule.fit_latent_axes`).
        ``False`` keeps the axes at the identity: the latent is the posterior mean itself.
    """

    n_genes: int
    n_latent: int = 20
    n_hidden: int = 128
    n_layers: int = 1
    dropout_rate: float = 0.1
    likelihood: str = "zinb"
    variational: bool = True
    n_categories: list[int] = field(default_factory=list)
    n_continuous: int = 0
    norm: str = "batch"
    encode_covariates: bool = True
    normalize_input: bool = True
    rescale_latent: bool = True

    @classmethod
    def from_dict(cls, settings: dict) -> AutoencoderConfig:
        """Return the configuration saved as ``settings`` (:meth:`to_dict`).

        Files written before a setting existed were trained with its behaviour then, whatever
        today's default: a missing setting takes that value (``SETTINGS_BEFORE_SAVED``).
        """
        return cls(**(SETTINGS_BEFORE_SAVED | settings))

    @property
    def n_covariates(self) -> int:
        """Length of the covariate vector fed to every layer."""
        return sum(self.n_categories) + self.n_continuous

    def to_dict(self) -> dict:
        """Return a JSON-serialisable copy."""
        return asdict(self)


class LossOutput(NamedTuple):
    """What :meth:`~sclatent.module.AutoencoderModule.forward` returns."""

    #: The objective to minimise: mean over cells of reconstruction + kl_weight × KL.
    loss: torch.Tensor
    #: Per-cell negative log-likelihood of the observations.
    reconstruction: torch.Tensor
    #: Per-cell KL divergence of the posterior from the prior (zeros when not variational).
    kl: torch.Tensor


class AutoencoderModule(nn.Module):
    """Encoder, decoder and likelihood, each fed the covariates.

    A batch of data is a dict with ``"x"`` (cells × genes), ``"library"`` (cells × 1, total
    counts), ``"cat"`` (cells × categorical covariates, integer codes) and ``"cont"`` (cells ×
    continuous covariates, standardised).

    Parameters
    ----------
    config
        The hyperparameters.
    """

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        n_cov = config.n_covariates
        self.encoder = Encoder(
            config.n_genes,
            config.n_latent,
            n_hidden=config.n_hidden,
            n_cov=n_cov if config.encode_covariates else 0,
            n_layers=config.n_layers,
            dropout_rate=config.dropout_rate,
            norm=config.norm,
        )
        self.decoder = MLP(
            config.n_latent, config.n_hidden, n_cov=n_cov, n_layers=config.n_layers, dropout_rate=0.0, norm=config.norm
        )
        self.likelihood = get_likelihood(config.likelihood)(config.n_hidden, config.n_genes)
        if (
            not config.variational
        ):  # a deterministic autoencoder never uses the variance (nor may DDP expect a gradient)
            self.encoder.log_var.requires_grad_(False)
        #: The latent's axes (n_latent × n_latent): :meth:`latent` is the posterior mean times this matrix.
        #: The identity until :meth:`fit_latent_axes` sets it; saved with the weights.
        self.register_buffer("latent_axes", torch.eye(config.n_latent))

    def with_categories(self, n_new: Sequence[int]) -> tuple[AutoencoderModule, torch.Tensor]:
        """Return a copy of the module that knows ``n_new[i]`` more categories of covariate ``i`` (architecture surgery).

        The new categories are appended after the known ones of their covariate. Their weights in
        every layer start from the mean of the known categories' weights, so that a new batch
        starts as an average known batch; every other weight, and the normalisation statistics,
        are copied unchanged, so cells of known categories are encoded and decoded exactly as before.

        Returns the new module and the mask of its covariate columns that are new.
        """
        if len(n_new) != len(self.config.n_categories) or any(int(m) < 0 for m in n_new):
            msg = f"n_new must give a count ≥ 0 for each of the {len(self.config.n_categories)} categorical covariates, got {list(n_new)}; pass one count per covariate."
            raise ValueError(msg)
        sources: list[list[int]] = []
        new: list[bool] = []
        start = 0
        for n, m in zip(self.config.n_categories, n_new, strict=True):
            sources += [[start + i] for i in range(n)] + [list(range(start, start + n))] * int(m)
            new += [False] * n + [True] * int(m)
            start += n
        sources += [[start + i] for i in range(self.config.n_continuous)]
        new += [False] * self.config.n_continuous
        config = replace(
            self.config, n_categories=[n + int(m) for n, m in zip(self.config.n_categories, n_new, strict=True)]
        )
        module = copy.deepcopy(self)
        module.config = config
        module.decoder.expand_covariates(sources)
        if config.encode_covariates:
            module.encoder.body.expand_covariates(sources)
        return module, torch.tensor(new)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # files of sclatent 0.1 have no latent axes: their latent is the posterior mean, as it was
        state_dict.setdefault(prefix + "latent_axes", torch.eye(self.config.n_latent))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def trains_new_columns_only(self) -> bool:
        """Whether :meth:`training_only_columns` is in effect (mapping a query: all else stays as the reference left it)."""
        return getattr(self, "_frozen_norm", False)

    @contextmanager
    def training_only_columns(self, columns: torch.Tensor) -> Iterator[None]:
        """Within the block, train only the covariate columns ``columns`` (a mask) and keep the normalisation statistics.

        Every other parameter is frozen (``requires_grad=False``), the gradients of the other
        columns of the covariate weights are zeroed, and the normalisation layers stay in
        evaluation mode, so that training moves nothing but the chosen columns (with an optimiser
        without weight decay). Everything is restored when the block ends.
        """
        weights = [*self.decoder.covariate_weights(), *self.encoder.body.covariate_weights()]
        if not self.config.encode_covariates:
            weights = weights[: len(self.decoder.covariate_weights())]
        trainable = {p: p.requires_grad for p in self.parameters()}
        handles = []
        try:
            for p in self.parameters():
                p.requires_grad_(False)
            for weight, first in weights:
                mask = torch.zeros_like(weight)
                mask[:, first:][:, columns.to(weight.device)] = 1.0
                weight.requires_grad_(True)
                # the module may move to a GPU after this: the mask follows the gradient
                handles.append(weight.register_hook(lambda grad, mask=mask: grad * mask.to(grad.device)))
            self._frozen_norm = True
            self.train(self.training)
            yield
        finally:
            self._frozen_norm = False
            for handle in handles:
                handle.remove()
            for p, flag in trainable.items():
                p.requires_grad_(flag)

    def train(self, mode: bool = True) -> AutoencoderModule:
        """Set training mode; normalisation layers stay in evaluation mode within :meth:`training_only_columns`."""
        super().train(mode)
        if getattr(self, "_frozen_norm", False):
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def covariates(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """One-hot categorical covariates and continuous ones, concatenated (cells × n_covariates)."""
        parts = [F.one_hot(batch["cat"][:, i], n).to(batch["x"].dtype) for i, n in enumerate(self.config.n_categories)]
        if self.config.n_continuous:
            parts.append(batch["cont"])
        return torch.cat(parts, dim=-1) if parts else None

    def encode(
        self, x: torch.Tensor, cov: torch.Tensor | None, library: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance of the latent (variance is 0 for a deterministic autoencoder).

        ``library`` (cells × 1, each cell's total counts, as in a batch's ``"library"``) scales the
        input when ``config.normalize_input``; without it the totals are summed from ``x``.
        """
        return self.encode_input(self.encoder_input(x, library), cov)

    def encoder_input(self, x: torch.Tensor, library: torch.Tensor | None = None) -> torch.Tensor:
        """Return what the encoder's first layer sees for data ``x``: ``log1p`` of counts (per 10,000 with ``normalize_input``)."""
        if self.config.normalize_input and self.likelihood.counts:
            total = x.sum(-1, keepdim=True) if library is None else library
            x = x * (_TARGET_SUM / total.clamp_min(1.0))
        return self.likelihood.encoder_input(x)

    def encode_input(self, h: torch.Tensor, cov: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance from the encoder's input ``h`` (see :meth:`encoder_input`)."""
        mean, var = self.encoder(h, cov if self.config.encode_covariates else None)
        return (mean, var) if self.config.variational else (mean, torch.zeros_like(mean))

    def latent(self, mean: torch.Tensor) -> torch.Tensor:
        """Return the latent that users see for posterior means ``mean``: ``mean @ latent_axes``."""
        return mean @ self.latent_axes

    def latent_to_mean(self, latent: torch.Tensor) -> torch.Tensor:
        """Return the posterior-mean coordinates of points of :meth:`latent` (its inverse), e.g. to decode them."""
        # in float64: the axes' scales span several orders of magnitude where the decoder is nearly flat
        return torch.linalg.solve(self.latent_axes.T.double(), latent.T.double()).T.to(latent.dtype)

    def expression(self, z: torch.Tensor, cov: torch.Tensor | None) -> torch.Tensor:
        """Return the decoded expression the latent's metric is measured in: ``log1p`` of expression per 10,000 counts.

        For likelihoods of log-normalised values (``counts=False``) the decoder's mean itself.
        """
        mean = self.normalized_mean(z, cov)
        return torch.log1p(_TARGET_SUM * mean) if self.likelihood.counts else mean

    def expression_gram(self, z: torch.Tensor, cov: torch.Tensor | None) -> torch.Tensor:
        """Sum over cells of ``JᵀJ`` (n_latent × n_latent, float64), ``J`` the Jacobian of :meth:`expression` at ``z``.

        ``J`` is genes × n_latent for each cell, computed exactly by forward-mode differentiation
        (so a likelihood's ``normalized_mean`` must support it, as every :mod:`torch` operation
        does), one latent direction at a time, on chunks of at most 256 cells whose Jacobians
        hold at most 2**24 values (one cell at a time when a cell's Jacobian alone holds more).
        Call it in evaluation mode.
        """
        n_cells, n_latent = z.shape
        gram = torch.zeros(n_latent, n_latent, dtype=torch.float64, device=z.device)
        chunk = max(1, min(256, _GRAM_VALUES // (n_latent * self.config.n_genes)))
        for start in range(0, n_cells, chunk):
            z_, cov_ = z[start : start + chunk], None if cov is None else cov[start : start + chunk]
            columns = []
            for k in range(n_latent):
                direction = torch.zeros_like(z_)
                direction[:, k] = 1.0
                tangent = torch.func.jvp(lambda point, c=cov_: self.expression(point, c), (z_,), (direction,))[1]
                columns.append(tangent.reshape(-1))
            J = torch.stack(columns)  # n_latent × (cells · genes)
            gram += (J @ J.T).double()
        return gram

    @torch.no_grad()
    def fit_latent_axes(self, gram: torch.Tensor, n_cells: int) -> None:
        """Set ``latent_axes`` from ``gram``, the :meth:`expression_gram` summed over ``n_cells`` cells.

        With ``G = gram / n_cells = V diag(λ) Vᵀ`` (λ descending), the axes are ``V diag(√λ)``:
        Euclidean distances of the latent are those of the decoder's pull-back metric ``G``
        (a change ``dz`` of the posterior mean changes the decoded log-expression by
        ``√(dzᵀ G dz)`` on average over the cells), and the latent's dimensions are ordered by how
        much expression they change, as principal components are. Each axis's sign makes its
        largest entry positive.
        """
        if not torch.isfinite(gram).all():
            msg = (
                "the decoder's Jacobian is not finite at these weights (training diverged), so the latent's axes "
                "cannot be set; train with a lower `learning_rate`, or pass `rescale_latent=False`."
            )
            raise FloatingPointError(msg)
        eigenvalues, vectors = torch.linalg.eigh(gram / max(n_cells, 1))
        order = torch.argsort(eigenvalues, descending=True)
        vectors = vectors[:, order]
        largest = vectors.abs().argmax(0)
        vectors = vectors * torch.sign(vectors[largest, torch.arange(vectors.shape[1])])
        # the floor keeps the axes invertible (for decoding) where the decoder is flat along a direction
        scale = eigenvalues[order].clamp_min(0).sqrt()
        scale = scale.clamp_min(1e-6 * float(scale.max().clamp_min(1e-12)))
        self.latent_axes.copy_((vectors * scale).to(self.latent_axes))

    def decode(self, z: torch.Tensor, cov: torch.Tensor | None, library: torch.Tensor) -> Distribution:
        """Return the distribution of the observations given latent ``z``."""
        return self.likelihood(self.decoder(z, cov), library)

    def normalized_mean(self, z: torch.Tensor, cov: torch.Tensor | None) -> torch.Tensor:
        """Denoised expression for latent ``z`` (see :meth:`Likelihood.normalized_mean`)."""
        return self.likelihood.normalized_mean(self.decoder(z, cov))

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> LossOutput:
        """Encode, sample, decode and score a batch."""
        x = batch["x"]
        cov = self.covariates(batch)
        mean, var = self.encode(x, cov, batch["library"])
        if self.config.variational:
            z = mean + torch.sqrt(var) * torch.randn_like(mean) if self.training else mean
            kl = 0.5 * (mean.pow(2) + var - torch.log(var) - 1).sum(-1)
        else:
            z = mean
            kl = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        reconstruction = self.likelihood.reconstruction_loss(self.decoder(z, cov), batch["library"], x)
        loss = torch.mean(reconstruction + kl_weight * kl)
        return LossOutput(loss, reconstruction, kl)
