"""Observation likelihoods: a decoder head plus a distribution object.

The NB, ZINB and Poisson distributions subclass :mod:`scvi.distributions` and replace only
``log_prob`` with a sparsity-aware kernel: terms that vanish at a zero count (the ``lgamma``
terms and ``x * log(mu)``) are evaluated on the non-zero entries alone. Single-cell count
matrices are mostly zeros, so this removes most of the ``lgamma``/``digamma`` work from a
training step. ``tests/module/test_likelihoods.py`` holds each kernel to scvi-tools' own within
1e-5 on real counts, gradients included.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from scvi.distributions import NegativeBinomial as _ScviNB
from scvi.distributions import Poisson as _ScviPoisson
from scvi.distributions import ZeroInflatedNegativeBinomial as _ScviZINB
from torch import nn
from torch.distributions import Distribution, Normal

from ..nn import full_precision
from ._fused import fused_zinb_kernel, fused_zinb_nll

_EPS = 1e-8


def _nonzero(x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    idx = torch.nonzero(x, as_tuple=True)
    return idx, x[idx]


def log_nb(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """Negative binomial log-probability, evaluating count-dependent terms only where ``x > 0``.

    Equal to :func:`scvi.distributions._negative_binomial.log_nb_positive` for non-negative
    integer ``x``. ``theta`` may be gene-wise (genes,) or cell-by-gene.
    """
    theta_b = theta.expand_as(mu)
    log_theta_mu = torch.log(theta_b + mu + eps)
    res = theta_b * (torch.log(theta + eps).expand_as(mu) - log_theta_mu)
    idx, xn = _nonzero(x)
    tn = theta_b[idx]
    nz = (
        res[idx]
        + xn * (torch.log(mu[idx] + eps) - log_theta_mu[idx])
        + torch.lgamma(xn + tn)
        - torch.lgamma(tn)
        - torch.lgamma(xn + 1)
    )
    return res.index_put(idx, nz)


class _ZINBLogProb(torch.autograd.Function):
    """ZINB log-probability with analytic gradients, fusing what autograd would keep as a dozen tensors.

    ``x`` is cells × genes and ``theta`` gene-wise. Dense work is only the zero case and the
    shared terms; the count-dependent terms run on the non-zero counts alone (gathered with
    one flat index), and ``lgamma``/``digamma`` of ``theta`` once per gene.
    """

    @staticmethod
    def forward(ctx, x, mu, theta, zi_logits, eps):
        n_genes = x.shape[-1]
        theta_eps = theta + eps
        tm = mu + theta_eps
        log_tm = torch.log(tm)
        q = (torch.log(theta_eps) - log_tm).mul_(theta).sub_(zi_logits)  # -pi + theta * log(theta / (theta + mu))
        sp_neg_pi = F.softplus(-zi_logits)
        res = F.softplus(q).sub_(sp_neg_pi)  # the zero case, everywhere
        flat = torch.nonzero(x.reshape(-1)).squeeze(1)
        cols = flat.remainder(n_genes)
        xn = x.reshape(-1).index_select(0, flat)
        tn = theta.index_select(0, cols)

        def take(t):
            return t.reshape(-1).index_select(0, flat)

        nz = (
            take(q)
            - take(sp_neg_pi)
            + xn * (torch.log(take(mu) + eps) - take(log_tm))
            + torch.lgamma(xn + tn)
            - torch.lgamma(theta).index_select(0, cols)
            - torch.lgamma(xn + 1)
        )
        res.reshape(-1).index_copy_(0, flat, nz)
        ctx.save_for_backward(xn, flat, cols, mu, theta, zi_logits, q, tm, log_tm)
        ctx.eps = eps
        return res

    @staticmethod
    def backward(ctx, grad):
        xn, flat, cols, mu, theta, zi_logits, q, tm, log_tm = ctx.saved_tensors
        eps = ctx.eps

        def take(t):
            return t.reshape(-1).index_select(0, flat)

        s_q = torch.sigmoid(q)
        theta_inv_tm = theta / tm
        # the zero case, everywhere
        d_pi = torch.sigmoid(-zi_logits).sub_(s_q)
        d_mu = -s_q * theta_inv_tm
        dq_dtheta = (torch.log(theta + eps) + theta / (theta + eps)) - log_tm - theta_inv_tm
        d_theta = s_q.mul_(dq_dtheta)
        # the non-zero counts
        tn = theta.index_select(0, cols)
        xn_inv_tm = xn / take(tm)
        d_pi.reshape(-1).index_copy_(0, flat, -torch.sigmoid(take(zi_logits)))
        d_mu.reshape(-1).index_copy_(0, flat, -take(theta_inv_tm) + xn / (take(mu) + eps) - xn_inv_tm)
        d_theta_nz = take(dq_dtheta) - xn_inv_tm + torch.digamma(xn + tn) - torch.digamma(theta).index_select(0, cols)
        d_theta.reshape(-1).index_copy_(0, flat, d_theta_nz)
        d_theta = d_theta.mul_(grad).sum(0)
        return None, d_mu.mul_(grad), d_theta, d_pi.mul_(grad), None


def log_zinb(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, zi_logits: torch.Tensor, eps: float = _EPS
) -> torch.Tensor:
    """Zero-inflated NB log-probability; count-dependent terms only where ``x > 0``.

    Equal to :func:`scvi.distributions._negative_binomial.log_zinb_positive` for non-negative
    integer ``x``; ``zi_logits`` are the logits of the zero-inflation probability. With a
    gene-wise ``theta`` (genes,) the fused kernel with analytic gradients is used; a
    cell-by-gene ``theta`` falls back to autograd.
    """
    shape = torch.broadcast_shapes(x.shape, mu.shape, zi_logits.shape)
    if theta.dim() == 1:
        g = shape[-1]
        x2, mu2, pi2 = (t.expand(shape).reshape(-1, g).contiguous() for t in (x, mu, zi_logits))
        return _ZINBLogProb.apply(x2, mu2, theta, pi2, eps).reshape(shape)
    theta_b = theta.expand(shape)
    softplus_pi = F.softplus(-zi_logits)
    log_theta_mu = torch.log(theta_b + mu + eps)
    pi_theta_log = -zi_logits + theta_b * (torch.log(theta_b + eps) - log_theta_mu)
    res = F.softplus(pi_theta_log) - softplus_pi
    idx, xn = _nonzero(x.expand(shape))
    tn = theta_b[idx]
    nz = (
        pi_theta_log[idx]
        - softplus_pi[idx]
        + xn * (torch.log(mu.expand(shape)[idx] + eps) - log_theta_mu[idx])
        + torch.lgamma(xn + tn)
        - torch.lgamma(tn)
        - torch.lgamma(xn + 1)
    )
    return res.index_put(idx, nz)


def log_poisson(x: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """Poisson log-probability; count-dependent terms only where ``x > 0``."""
    res = -rate
    idx, xn = _nonzero(x)
    nz = res[idx] + xn * torch.log(rate[idx]) - torch.lgamma(xn + 1)
    return res.index_put(idx, nz)


class NegativeBinomial(_ScviNB):
    """:class:`scvi.distributions.NegativeBinomial` with the sparsity-aware :func:`~sclatent.module.log_nb`."""

    def __init__(self, mu: torch.Tensor, theta: torch.Tensor) -> None:
        super().__init__(mu=mu, theta=theta, validate_args=False)
        self._theta = theta

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-probability of counts ``value``."""
        return log_nb(value, self.mu, self._theta)


class ZeroInflatedNegativeBinomial(_ScviZINB):
    """:class:`scvi.distributions.ZeroInflatedNegativeBinomial` with the sparsity-aware :func:`~sclatent.module.log_zinb`."""

    def __init__(self, mu: torch.Tensor, theta: torch.Tensor, zi_logits: torch.Tensor) -> None:
        super().__init__(mu=mu, theta=theta, zi_logits=zi_logits, validate_args=False)
        self._theta = theta

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-probability of counts ``value``."""
        return log_zinb(value, self.mu, self._theta, self.zi_logits)


class Poisson(_ScviPoisson):
    """:class:`scvi.distributions.Poisson` with the sparsity-aware :func:`~sclatent.module.log_poisson`."""

    def __init__(self, rate: torch.Tensor) -> None:
        super().__init__(rate=rate, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-probability of counts ``value``."""
        return log_poisson(value, self.rate)


class Likelihood(nn.Module):
    """Base class of the observation models: the public hook for a new likelihood.

    A likelihood owns the decoder's output layers and any gene-wise parameters, and turns the
    decoder's hidden state into a :class:`torch.distributions.Distribution` over the
    observations. The loss is ``-dist.log_prob(x).sum(-1)`` (plus the KL term), computed by
    :meth:`reconstruction_loss`.

    Subclass it, set :attr:`counts`, implement :meth:`forward` and :meth:`normalized_mean`,
    and register it with :func:`register_likelihood`; its name can then be passed as
    ``likelihood=`` to :func:`sclatent.tl.autoencode`. The latent's axes
    (``rescale_latent``) come from the Jacobian of :meth:`normalized_mean`, taken by
    forward-mode differentiation: :mod:`torch` operations support it, a custom
    :class:`torch.autograd.Function` needs a ``jvp``.

    Parameters
    ----------
    n_hidden
        Width of the decoder's last hidden layer.
    n_genes
        Number of genes.
    """

    #: Whether the observations must be non-negative integer counts. Count likelihoods also
    #: get ``log1p`` of the counts as encoder input and the library size as a scale factor.
    counts: ClassVar[bool] = True

    def __init__(self, n_hidden: int, n_genes: int) -> None:
        super().__init__()
        self.n_hidden = n_hidden
        self.n_genes = n_genes

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """Transform the observations into the encoder's input."""
        return torch.log1p(x) if self.counts else x

    def forward(self, h: torch.Tensor, library: torch.Tensor) -> Distribution:
        """Return the distribution of the observations given decoder state ``h`` and library sizes (cells × 1)."""
        raise NotImplementedError

    def reconstruction_loss(self, h: torch.Tensor, library: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Each cell's negative log-likelihood of observations ``x`` (cells): ``-self(h, library).log_prob(x).sum(-1)``.

        The training loss's reconstruction term. Override it only with a faster computation of the
        same value (as :class:`ZINBLikelihood` does on CPUs).
        """
        return -self(h, library).log_prob(x).sum(-1)

    def prepare(self, on_cpu: bool) -> None:
        """Get ready to train (``fit`` calls it first; ``on_cpu``: whether training runs on a CPU), e.g. build a kernel; here nothing."""

    def normalized_mean(self, h: torch.Tensor) -> torch.Tensor:
        """Denoised expression: the expected value per unit library size (counts), or the mean (gaussian)."""
        raise NotImplementedError


_LIKELIHOODS: dict[str, type[Likelihood]] = {}


def register_likelihood(name: str):
    """Register a :class:`~sclatent.module.Likelihood` subclass under ``name`` (a class decorator).

    Examples
    --------
    >>> import sclatent as sl
    >>> @sl.module.register_likelihood("my_poisson")
    ... class MyPoisson(sl.module.PoissonLikelihood):
    ...     pass
    """

    def decorator(cls: type[Likelihood]) -> type[Likelihood]:
        if not (isinstance(cls, type) and issubclass(cls, Likelihood)):
            msg = f"register_likelihood expects a subclass of sclatent.module.Likelihood, got {cls!r}; pass a class that subclasses it."
            raise TypeError(msg)
        _LIKELIHOODS[name] = cls
        return cls

    return decorator


def get_likelihood(name: str) -> type[Likelihood]:
    """Return the likelihood class registered under ``name``."""
    try:
        return _LIKELIHOODS[name]
    except KeyError:
        msg = f"Unknown likelihood {name!r}; choose one of {sorted(_LIKELIHOODS)} or register your own with sclatent.module.register_likelihood."
        raise ValueError(msg) from None


def available_likelihoods() -> list[str]:
    """Names of the registered likelihoods."""
    return sorted(_LIKELIHOODS)


class _ScaledCounts(Likelihood):
    """Counts with mean ``library × softmax(W h)``."""

    def __init__(self, n_hidden: int, n_genes: int) -> None:
        super().__init__(n_hidden, n_genes)
        self.scale = nn.Linear(n_hidden, n_genes)

    def normalized_mean(self, h: torch.Tensor) -> torch.Tensor:
        return torch.softmax(full_precision(self.scale(h)), dim=-1)


@register_likelihood("poisson")
class PoissonLikelihood(_ScaledCounts):
    """Poisson counts with rate ``library × softmax(W h)``."""

    def forward(self, h: torch.Tensor, library: torch.Tensor) -> Distribution:
        return Poisson(library * self.normalized_mean(h))


@register_likelihood("nb")
class NBLikelihood(_ScaledCounts):
    """Negative binomial counts with a gene-wise inverse dispersion."""

    def __init__(self, n_hidden: int, n_genes: int) -> None:
        super().__init__(n_hidden, n_genes)
        self.log_theta = nn.Parameter(torch.randn(n_genes))

    def forward(self, h: torch.Tensor, library: torch.Tensor) -> Distribution:
        return NegativeBinomial(library * self.normalized_mean(h), torch.exp(self.log_theta))


@register_likelihood("zinb")
class ZINBLikelihood(NBLikelihood):
    """Zero-inflated negative binomial counts: NB plus a per cell and gene dropout probability."""

    def __init__(self, n_hidden: int, n_genes: int) -> None:
        super().__init__(n_hidden, n_genes)
        self.dropout = nn.Linear(n_hidden, n_genes)

    def dropout_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Logits of the zero-inflation (dropout) probability, cells × genes."""
        return full_precision(self.dropout(h))

    def forward(self, h: torch.Tensor, library: torch.Tensor) -> Distribution:
        return self._distribution(library * self.normalized_mean(h), self.dropout_logits(h))

    def _distribution(self, mu: torch.Tensor, zi_logits: torch.Tensor) -> Distribution:
        """Return the ZINB with mean ``mu`` and dropout logits ``zi_logits`` (this likelihood's theta)."""
        return ZeroInflatedNegativeBinomial(mu, torch.exp(self.log_theta), zi_logits)

    def _fusable(self) -> bool:
        """Whether the fused kernel computes this class's loss: true unless a subclass changed how ``mu`` or the dropout is made."""
        cls = type(self)
        return (
            cls.forward is ZINBLikelihood.forward
            and cls.normalized_mean is _ScaledCounts.normalized_mean
            and cls.dropout_logits is ZINBLikelihood.dropout_logits
        )

    def reconstruction_loss(self, h: torch.Tensor, library: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Each cell's negative log-likelihood; by the fused kernel (:func:`~sclatent.module.fused_zinb_kernel`) on CPUs where it is built."""
        if not self._fusable():
            return super().reconstruction_loss(h, library, x)
        logits, zi_logits = full_precision(self.scale(h)), self.dropout_logits(h)
        nll = fused_zinb_nll(x, logits, library, self.log_theta, zi_logits)
        if nll is not None:
            return nll
        # the PyTorch kernel (GPUs, no build, non-finite values), on the heads already computed
        return -self._distribution(library * torch.softmax(logits, dim=-1), zi_logits).log_prob(x).sum(-1)

    def prepare(self, on_cpu: bool) -> None:
        """Build (or load) the fused kernel before training on a CPU, so that its first build does not fall in an epoch."""
        if on_cpu and self._fusable():
            fused_zinb_kernel()


@register_likelihood("gaussian")
class GaussianLikelihood(Likelihood):
    """Gaussian on log-normalised values with a gene-wise standard deviation."""

    counts = False

    def __init__(self, n_hidden: int, n_genes: int) -> None:
        super().__init__(n_hidden, n_genes)
        self.mean = nn.Linear(n_hidden, n_genes)
        self.log_sd = nn.Parameter(torch.zeros(n_genes))

    def forward(self, h: torch.Tensor, library: torch.Tensor) -> Distribution:
        return Normal(full_precision(self.mean(h)), torch.exp(self.log_sd).expand(h.shape[0], -1), validate_args=False)

    def normalized_mean(self, h: torch.Tensor) -> torch.Tensor:
        return full_precision(self.mean(h))
