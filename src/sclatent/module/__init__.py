"""Pure :mod:`torch` modules and the likelihoods (the hooks for new observation models)."""

from ._autoencoder import AutoencoderConfig, AutoencoderModule, LossOutput
from ._classifier import ClassifierConfig, ClassifierModule
from ._fused import fused_zinb_kernel, fused_zinb_nll, fused_zinb_status
from ._likelihoods import (
    GaussianLikelihood,
    Likelihood,
    NBLikelihood,
    NegativeBinomial,
    Poisson,
    PoissonLikelihood,
    ZeroInflatedNegativeBinomial,
    ZINBLikelihood,
    available_likelihoods,
    get_likelihood,
    log_nb,
    log_poisson,
    log_zinb,
    register_likelihood,
)

__all__ = [
    "AutoencoderConfig",
    "AutoencoderModule",
    "ClassifierConfig",
    "ClassifierModule",
    "GaussianLikelihood",
    "Likelihood",
    "LossOutput",
    "NBLikelihood",
    "NegativeBinomial",
    "Poisson",
    "PoissonLikelihood",
    "ZINBLikelihood",
    "ZeroInflatedNegativeBinomial",
    "available_likelihoods",
    "fused_zinb_kernel",
    "fused_zinb_nll",
    "fused_zinb_status",
    "get_likelihood",
    "log_nb",
    "log_poisson",
    "log_zinb",
    "register_likelihood",
]
