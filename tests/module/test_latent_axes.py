"""The latent's axes: the decoder's pull-back metric, computed exactly, and a latent whose distances follow it."""

import pytest
import torch

from sclatent.module import AutoencoderConfig, AutoencoderModule


def _module(likelihood: str) -> AutoencoderModule:
    torch.manual_seed(0)
    config = AutoencoderConfig(n_genes=60, n_latent=5, n_hidden=16, likelihood=likelihood, n_categories=[3])
    module = AutoencoderModule(config)
    module.train()
    with torch.no_grad():  # non-trivial normalisation statistics, as after training
        module.decoder(torch.randn(64, 5), torch.eye(3)[torch.arange(64) % 3])
    return module.eval()


@pytest.mark.parametrize("likelihood", ["zinb", "gaussian"])
def test_expression_gram_is_the_sum_of_jacobian_products(likelihood):
    module = _module(likelihood)
    z = torch.randn(7, 5)
    cov = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2, 0])]
    expected = torch.zeros(5, 5, dtype=torch.float64)
    for i in range(len(z)):
        J = torch.autograd.functional.jacobian(lambda zi, i=i: module.expression(zi[None], cov[i : i + 1])[0], z[i])
        expected += (J.T @ J).double()
    with torch.no_grad():
        gram = module.expression_gram(z, cov)
    torch.testing.assert_close(gram, expected, rtol=1e-4, atol=1e-8)
    # the metric is measured in log1p of expression per 10,000 (counts), or in the decoded values themselves
    mean = module.normalized_mean(z, cov)
    expression = torch.log1p(1e4 * mean) if likelihood == "zinb" else mean
    torch.testing.assert_close(module.expression(z, cov), expression)


def test_latent_distances_follow_the_metric_and_decode_back():
    module = _module("zinb")
    torch.testing.assert_close(module.latent_axes, torch.eye(5))  # the identity until set
    z = torch.randn(300, 5)
    cov = torch.eye(3)[torch.arange(300) % 3]
    with torch.no_grad():
        gram = module.expression_gram(z, cov)
    module.fit_latent_axes(gram, len(z))
    metric = (gram / len(z)).float()
    steps = torch.randn(50, 5)
    # the squared length of a step in the latent is the mean squared change of the decoded log-expression it causes
    torch.testing.assert_close(
        module.latent(steps).pow(2).sum(1), torch.einsum("nk,kl,nl->n", steps, metric, steps), rtol=1e-4, atol=1e-6
    )
    lengths = module.latent_axes.norm(dim=0)
    assert (lengths[:-1] >= lengths[1:]).all(), "the first dimension changes expression most"
    largest = module.latent_axes.abs().argmax(0)
    assert (module.latent_axes[largest, torch.arange(5)] > 0).all()  # a fixed sign per axis
    torch.testing.assert_close(module.latent_to_mean(module.latent(z)), z, rtol=1e-4, atol=1e-4)
    # the axes are saved with the weights, and files without them load with the identity
    state = module.state_dict()
    assert "latent_axes" in state
    fresh = AutoencoderModule(module.config)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.latent_axes, module.latent_axes)
    del state["latent_axes"]
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.latent_axes, torch.eye(5))
