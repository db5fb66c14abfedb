import numpy as np
import pytest
import torch
from scvi.distributions import Poisson as ScviPoisson
from scvi.distributions._negative_binomial import log_nb_positive, log_zinb_positive

import sclatent as sl
from sclatent.module import log_nb, log_poisson, log_zinb


@pytest.fixture(scope="module")
def params():
    """Real PBMC counts with parameters of realistic range, float64."""
    counts = sl.datasets.pbmc3k().X[:256]
    genes = np.argsort(-np.asarray((counts > 0).sum(0)).ravel())[:1000]  # the most often detected genes
    x = torch.tensor(counts[:, genes].toarray(), dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    library = x.sum(1, keepdim=True)
    scale = torch.softmax(torch.randn(x.shape, generator=g, dtype=torch.float64), -1)
    mu = library * scale
    theta = torch.rand(x.shape[1], generator=g, dtype=torch.float64) * 5 + 0.01
    pi = torch.randn(x.shape, generator=g, dtype=torch.float64) * 2
    assert 0 < (x > 0).double().mean() < 0.9
    return x, mu, theta, pi


def _grads(f, tensors):
    tensors = [t.detach().clone().requires_grad_() for t in tensors]
    value = f(*tensors)
    return value.detach(), torch.autograd.grad(value.sum(), tensors)


@pytest.mark.parametrize("theta_shape", ["genes", "cells x genes"])
def test_zinb_matches_scvi(params, theta_shape):
    x, mu, theta, pi = params
    if theta_shape != "genes":
        theta = theta.expand_as(mu).contiguous() * torch.linspace(0.5, 1.5, mu.shape[0], dtype=mu.dtype)[:, None]
    ref, ref_grads = _grads(lambda m, t, p: log_zinb_positive(x, m, t, p), [mu, theta, pi])
    ours, our_grads = _grads(lambda m, t, p: log_zinb(x, m, t, p), [mu, theta, pi])
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    for a, b in zip(our_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-6)


def test_nb_matches_scvi(params):
    x, mu, theta, _ = params
    ref, ref_grads = _grads(lambda m, t: log_nb_positive(x, m, t), [mu, theta])
    ours, our_grads = _grads(lambda m, t: log_nb(x, m, t), [mu, theta])
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    for a, b in zip(our_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-6)


def test_poisson_matches_scvi(params):
    x, mu, _, _ = params
    ref, ref_grads = _grads(lambda m: ScviPoisson(m).log_prob(x), [mu])
    ours, our_grads = _grads(lambda m: log_poisson(x, m), [mu])
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(our_grads[0], ref_grads[0], atol=1e-5, rtol=1e-6)


def test_zinb_float32_matches_scvi(params):
    """The training precision: float32 kernels agree with scvi-tools within float32 rounding."""
    x, mu, theta, pi = (t.float() for t in params)
    ref = log_zinb_positive(x, mu, theta, pi)
    torch.testing.assert_close(log_zinb(x, mu, theta, pi), ref, atol=1e-4, rtol=1e-5)


def test_zinb_gradcheck(params):
    x, mu, theta, pi = params
    inputs = (
        mu[:4, :30].clone().requires_grad_(),
        theta[:30].clone().requires_grad_(),
        pi[:4, :30].clone().requires_grad_(),
    )
    assert torch.autograd.gradcheck(lambda m, t, p: log_zinb(x[:4, :30], m, t, p), inputs)


def test_distribution_objects_use_the_kernels(params):
    x, mu, theta, pi = params
    dist = sl.module.ZeroInflatedNegativeBinomial(mu, theta, pi)
    torch.testing.assert_close(dist.log_prob(x), log_zinb_positive(x, mu, theta, pi), atol=1e-5, rtol=0)
    assert torch.allclose(dist.mean, (1 - torch.sigmoid(pi)) * mu)


def test_register_likelihood_hook():
    @sl.module.register_likelihood("test_poisson_copy")
    class Copy(sl.module.PoissonLikelihood):
        pass

    assert sl.module.get_likelihood("test_poisson_copy") is Copy
    with pytest.raises(TypeError, match="subclass"):
        sl.module.register_likelihood("bad")(dict)
    with pytest.raises(ValueError, match="Unknown likelihood 'nope'"):
        sl.module.get_likelihood("nope")
