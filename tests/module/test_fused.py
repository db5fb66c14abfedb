"""The fused ZINB kernel: equal to the PyTorch kernel on real counts, used by training, and a clean fallback."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from scvi.distributions._negative_binomial import log_zinb_positive

import sclatent as sl
from sclatent.module import _fused

#: Where the kernel must build: Linux on x86-64 with a C++ compiler and ninja (as this project's CI has).
CAN_BUILD = (
    sys.platform.startswith("linux")
    and platform.machine() == "x86_64"
    and shutil.which("c++") is not None
    and shutil.which("ninja") is not None
)


@pytest.fixture(scope="module")
def real_inputs():
    """256 PBMC cells × 2,000 HVGs of raw counts, with scale logits, zero-inflation logits and log theta of realistic range."""
    counts = sl.datasets.pbmc3k().X
    genes = np.argsort(-np.asarray((counts > 0).sum(0)).ravel())[:2000]
    x = torch.tensor(counts[:256][:, genes].toarray(), dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(x.shape, generator=g) * 2
    zi = torch.randn(x.shape, generator=g) * 3
    log_theta = torch.randn(x.shape[1], generator=g) * 1.5
    return x, x.sum(1, keepdim=True), logits, zi, log_theta


def _loss_and_grads(f, x, library, logits, zi, log_theta, weights):
    leaves = [t.clone().requires_grad_() for t in (logits, zi, log_theta)]
    nll = f(x, library, *leaves)
    (nll * weights).sum().backward()
    return nll.detach(), [t.grad for t in leaves]


def _reference(x, library, logits, zi, log_theta):
    return -log_zinb_positive(x, library * torch.softmax(logits, -1), torch.exp(log_theta), zi).sum(-1)


def _fused_nll(x, library, logits, zi, log_theta):
    return sl.module.fused_zinb_nll(x, logits, library, log_theta, zi)


def _assert_as_close_as_float32(inputs, weights, slack):
    """The fused loss and gradients are within twice scvi-tools' float32 error of its float64 values (plus ``slack`` × the largest).

    Returns the fused loss.
    """
    ours, our_grads = _loss_and_grads(_fused_nll, *inputs, weights)
    # the truth in float64, and scvi-tools' kernel in float32 for the rounding float32 allows
    exact, exact_grads = _loss_and_grads(_reference, *(t.double() for t in inputs), weights.double())
    single, single_grads = _loss_and_grads(_reference, *inputs, weights)
    for a, b, truth in zip([ours, *our_grads], [single, *single_grads], [exact, *exact_grads], strict=True):
        assert torch.isfinite(a).all()
        fused_error = float((a.double() - truth).abs().max())
        float32_error = float((b.double() - truth).abs().max())
        assert fused_error <= 2 * float32_error + slack * float(truth.abs().max()), (fused_error, float32_error)
    return ours


@pytest.mark.skipif(not CAN_BUILD, reason="the fused kernel builds on Linux x86-64 with a C++ compiler and ninja")
def test_fused_kernel_builds_and_matches_scvi_on_real_counts(real_inputs):
    assert sl.module.fused_zinb_kernel() is not None, sl.module.fused_zinb_status()
    assert sl.module.fused_zinb_status() == "fused"
    x = real_inputs[0]
    assert (x > 0).float().mean() < 0.5  # sparse, as single-cell counts are
    weights = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(1))  # any per-cell weights, not a mean
    _assert_as_close_as_float32(real_inputs, weights, slack=1e-7)


@pytest.mark.skipif(not CAN_BUILD, reason="the fused kernel builds on Linux x86-64 with a C++ compiler and ninja")
def test_fused_kernel_at_extreme_values_and_without_gradients(real_inputs):
    """An empty cell, zero-inflation logits of ±100, theta from e^-15 to e^15: as close to float64 as float32 allows."""
    x, library, logits, zi, log_theta = (t.clone() for t in real_inputs)
    x[5], library[5] = 0.0, 0.0  # a cell without counts
    zi[:, :50], zi[:, 50:100] = 100.0, -100.0
    log_theta[:20], log_theta[20:40] = 15.0, -15.0
    ours = _assert_as_close_as_float32((x, library, logits, zi, log_theta), torch.ones(x.shape[0]), slack=1e-6)
    # without gradients (validation): the kernel's cheaper path, the same values, no autograd node
    with torch.no_grad():
        plain = sl.module.fused_zinb_nll(x, logits, library, log_theta, zi)
    assert plain.grad_fn is None
    torch.testing.assert_close(plain, ours, rtol=0, atol=0)
    # a theta that overflows float32 goes to the PyTorch kernel
    assert sl.module.fused_zinb_nll(x, logits, library, torch.full_like(log_theta, 90.0), zi) is None


@pytest.mark.skipif(not CAN_BUILD, reason="the fused kernel builds on Linux x86-64 with a C++ compiler and ninja")
def test_fused_kernel_leaves_non_finite_inputs_to_the_pytorch_kernel(real_inputs):
    x, library, logits, zi, log_theta = real_inputs
    bad = logits.clone()
    bad[3, 7] = float("nan")
    assert sl.module.fused_zinb_nll(x, bad, library, log_theta, zi) is None
    likelihood = sl.module.ZINBLikelihood(4, x.shape[1])
    with torch.no_grad():
        likelihood.scale.weight.fill_(float("nan"))
    nll = likelihood.reconstruction_loss(torch.ones(x.shape[0], 4), library, x)
    assert torch.isnan(nll).all()  # so that training stops with its error instead of going on with garbage


def test_likelihood_reconstruction_loss_is_the_distributions_unless_fused(real_inputs):
    """ZINB's fused path gives the distribution's value; a subclass that changes the mean keeps the distribution's path."""
    x, library = real_inputs[:2]
    h = torch.randn(x.shape[0], 8, generator=torch.Generator().manual_seed(2))

    class Scaled(sl.module.ZINBLikelihood):
        def normalized_mean(self, h):
            return 0.5 * super().normalized_mean(h) + 0.5 / self.n_genes

    for cls in (sl.module.ZINBLikelihood, Scaled, sl.module.NBLikelihood, sl.module.PoissonLikelihood):
        torch.manual_seed(0)
        likelihood = cls(8, x.shape[1])
        expected = -likelihood(h, library).log_prob(x).sum(-1)
        torch.testing.assert_close(likelihood.reconstruction_loss(h, library, x), expected, rtol=1e-5, atol=1e-3)
    assert not Scaled(8, 10)._fusable()
    assert sl.module.ZINBLikelihood(8, 10)._fusable()


@pytest.mark.skipif(not CAN_BUILD, reason="the fused kernel builds on Linux x86-64 with a C++ compiler and ninja")
def test_training_on_cpu_uses_the_fused_kernel(pbmc_small):
    model = sl.models.Autoencoder(pbmc_small)
    model.fit(max_epochs=2, progress_bar=False, accelerator="cpu")
    assert model.training_info["zinb_kernel"] == "fused"
    # the training loss's reconstruction term comes from the kernel's autograd node
    module = model.module.train()
    batch = model._inputs(None)[np.arange(64)]
    out = module(batch)
    assert type(out.reconstruction.grad_fn).__name__ == "_FusedZINBBackward"
    nb = sl.models.Autoencoder(pbmc_small, likelihood="nb")
    nb.fit(max_epochs=1, progress_bar=False)
    assert "zinb_kernel" not in nb.training_info


def test_a_failed_build_falls_back_and_says_why(pbmc_small, monkeypatch):
    import torch.utils.cpp_extension

    def broken(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", broken)
    monkeypatch.setattr(_fused, "_STATE", {"tried": False, "kernel": None, "error": None})
    monkeypatch.setattr(_fused.sys, "platform", "linux")
    monkeypatch.setattr(_fused.platform, "machine", lambda: "x86_64")
    assert sl.module.fused_zinb_kernel() is None
    assert "Ninja is required" in sl.module.fused_zinb_status()
    model = sl.models.Autoencoder(pbmc_small)
    model.fit(max_epochs=2, progress_bar=False, accelerator="cpu")
    assert "Ninja is required" in model.training_info["zinb_kernel"]
    assert np.isfinite(model.history["train_loss"]).all()


def test_sclatent_fused_0_turns_the_kernel_off():
    code = "import sclatent as sl; print(sl.module.fused_zinb_kernel() is None, sl.module.fused_zinb_status())"
    env = {**__import__("os").environ, "SCLATENT_FUSED": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True turned off by SCLATENT_FUSED=0"
