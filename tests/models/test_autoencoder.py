from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sclatent as sl

from sclatent_test_helpers import assert_names_fix


@pytest.fixture
def trained(pbmc_small):
    model = sl.models.Autoencoder(pbmc_small, batch_key="donor_batch", continuous_covariate_keys=["pct_mito"])
    model.fit(max_epochs=4, progress_bar=False)
    return model, pbmc_small


def test_save_load_gives_identical_latent(trained, tmp_path):
    model, adata = trained
    model.save(tmp_path / "model")
    # a config file plus tensors that load with weights_only=True
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    assert meta["config"]["n_genes"] == adata.n_vars
    assert meta["setup"]["categories"]["donor_batch"] == ["a", "b"]
    state = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())

    loaded = sl.models.Autoencoder.load(tmp_path / "model", adata)
    np.testing.assert_array_equal(loaded.get_latent(), model.get_latent())
    np.testing.assert_array_equal(loaded.get_latent(adata), model.get_latent())
    np.testing.assert_array_equal(loaded.get_denoised(), model.get_denoised())
    assert loaded.history.equals(model.history)
    np.testing.assert_array_equal(loaded.validation_indices, model.validation_indices)


def test_save_refuses_to_overwrite(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "m")
    model.save(tmp_path / "m", overwrite=True)


def test_load_errors(trained, tmp_path):
    model, _ = trained
    with pytest.raises(FileNotFoundError, match=r"pass the directory that `model\.save\(path\)` wrote") as raised:
        sl.models.Autoencoder.load(tmp_path / "nothing")
    assert_names_fix(raised.value)
    model.save(tmp_path / "m")
    weights = tmp_path / "m" / "model.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupted or truncated") as raised:
        sl.models.Autoencoder.load(tmp_path / "m")
    assert_names_fix(raised.value)
    model.save(tmp_path / "m2")
    meta = json.loads((tmp_path / "m2" / "config.json").read_text())
    meta["format"] = 99
    (tmp_path / "m2" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format 99") as raised:
        sl.models.Autoencoder.load(tmp_path / "m2")
    assert_names_fix(raised.value)


def test_new_data_genes_matched_by_name(trained):
    model, adata = trained
    shuffled = adata[:, np.random.default_rng(1).permutation(adata.n_vars)].copy()
    np.testing.assert_allclose(model.get_latent(shuffled), model.get_latent(adata), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        model.get_denoised(shuffled), model.get_denoised(adata), rtol=1e-4, atol=1e-5
    )  # denoised comes back in the model's gene order


def test_new_data_missing_genes(trained):
    model, adata = trained
    with pytest.raises(ValueError, match=r"3 of the model's 500 genes are missing"):
        model.get_latent(adata[:, 3:].copy())


def test_new_data_unseen_batch(trained):
    model, adata = trained
    new = adata[:50].copy()
    new.obs["donor_batch"] = ["c"] * 25 + ["d"] * 25
    with pytest.raises(ValueError, match=r"not trained on: \['c', 'd'\]"):
        model.get_latent(new)


def test_loaded_model_without_data_asks_for_it(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m")
    loaded = sl.models.Autoencoder.load(tmp_path / "m")
    with pytest.raises(ValueError, match="pass `adata`"):
        loaded.get_latent()


def test_dropout_probability(pbmc_small):
    model = sl.models.Autoencoder(pbmc_small)
    model.fit(max_epochs=2, progress_bar=False)
    p = model.get_dropout_probability()
    assert p.shape == pbmc_small.shape
    assert ((p >= 0) & (p <= 1)).all()
    nb = sl.models.Autoencoder(pbmc_small, likelihood="nb")
    with pytest.raises(ValueError, match="likelihood='zinb'"):
        nb.get_dropout_probability()


def test_early_stopping_restores_best_weights(pbmc_small):
    model = sl.models.Autoencoder(pbmc_small)
    model.fit(max_epochs=60, early_stopping_patience=3, kl_warmup_epochs=2, learning_rate=1e-2, progress_bar=False)
    info = model.training_info
    assert info["stopped_early"]
    assert info["n_epochs"] < 60
    best = info["best_epoch"]
    assert model.history["validation_loss"].idxmin() == best
    # the weights in the model are those of the best epoch
    held_out = -model.elbo(indices=model.validation_indices).mean()
    assert held_out == pytest.approx(model.history["validation_loss"].min(), rel=1e-4)


def test_callbacks_hook(pbmc_small):
    from lightning.pytorch.callbacks import Callback

    class CountEpochs(Callback):
        n = 0

        def on_train_epoch_end(self, trainer, pl_module):
            self.n += 1

    counter = CountEpochs()
    sl.models.Autoencoder(pbmc_small).fit(max_epochs=3, early_stopping=False, progress_bar=False, callbacks=[counter])
    assert counter.n == 3


def test_outputs_are_written_once_not_assembled_from_copies(trained):
    # numpy allocations are traced: the denoised matrix must exist once, not as chunks plus joined copies
    import tracemalloc

    model, _ = trained
    tracemalloc.start()
    try:
        denoised = model.get_denoised()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert denoised.flags["C_CONTIGUOUS"]
    assert denoised.dtype == np.float32
    assert peak < 1.3 * denoised.nbytes, f"peak {peak} bytes for a {denoised.nbytes}-byte result"


def test_decoder_only_covariates_hide_the_batch_from_the_encoder(pbmc_small):
    model = sl.models.Autoencoder(pbmc_small, batch_key="donor_batch", encode_covariates=False)
    assert model.module.encoder.body.n_cov == 0
    assert model.module.decoder.n_cov == 2
    model.fit(max_epochs=2, progress_bar=False)
    # the latent of a cell does not depend on the batch it is said to be from; its denoised expression does
    other = pbmc_small.copy()
    other.obs["donor_batch"] = other.obs["donor_batch"].map({"a": "b", "b": "a"}).astype("category")
    np.testing.assert_array_equal(model.get_latent(other), model.get_latent())
    assert not np.allclose(model.get_denoised(other), model.get_denoised())


def test_model_files_without_the_newer_settings_load(pbmc_small, tmp_path):
    # a model as sclatent 0.1 trained it, saved without the settings it did not have
    import torch

    model = sl.models.Autoencoder(
        pbmc_small, n_latent=10, norm="batch", encode_covariates=True, normalize_input=False, rescale_latent=False
    )
    model.fit(max_epochs=2, progress_bar=False)
    adata = pbmc_small
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    # as in files written before these settings were saved
    for key in ("norm", "encode_covariates", "normalize_input", "rescale_latent"):
        del meta["config"][key]
    del meta["latent_axes_fitted"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    state = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    del state["latent_axes"]  # nor had they latent axes: their latent is the posterior mean
    torch.save(state, tmp_path / "m" / "model.pt")
    loaded = sl.models.Autoencoder.load(tmp_path / "m", adata)
    assert loaded.config.norm == "batch"
    assert loaded.config.encode_covariates
    assert not loaded.config.normalize_input
    assert not loaded.config.rescale_latent
    np.testing.assert_array_equal(loaded.get_latent(), model.get_latent())


def test_latent_on_decoder_axes_or_the_posterior_mean(pbmc_small):
    import torch

    def posterior_mean(model):
        module = model.module
        return model._map(
            model._inputs(None), lambda b: module.encode(b["x"], module.covariates(b), b["library"])[0], 4096
        )[0]

    plain = sl.models.Autoencoder(pbmc_small, rescale_latent=False).fit(max_epochs=3, progress_bar=False)
    np.testing.assert_array_equal(plain.get_latent(), posterior_mean(plain))
    model = sl.models.Autoencoder(pbmc_small).fit(max_epochs=3, progress_bar=False)
    latent, mean = model.get_latent(), posterior_mean(model)
    np.testing.assert_array_equal(mean, posterior_mean(plain))  # the same training; only the axes differ
    np.testing.assert_allclose(latent, mean @ model.module.latent_axes.numpy(), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(model.module.latent_axes, torch.eye(model.config.n_latent))
    # a unit step along any latent dimension changes the decoded log-expression by 1 (root mean square over the
    # training cells), measured by finite differences of the decoder, not by the gram the axes came from
    axes = model.module.latent_axes.double()
    assert (axes.norm(dim=0).diff() <= 0).all()  # ordered like principal components: the first changes expression most
    module, step = model.module.eval(), 1e-3
    batch = model._inputs(None)[model.train_indices]
    with torch.no_grad():
        cov = module.covariates(batch)
        at = torch.from_numpy(mean[model.train_indices]).double()
        base = module.expression(at.float(), cov).double()
        moves = torch.linalg.solve(axes.T, torch.eye(model.config.n_latent, dtype=torch.float64)).T * step
        change = [(module.expression((at + move).float(), cov).double() - base) / step for move in moves]
    per_dimension = torch.stack([c.pow(2).sum(1).mean() for c in change]).sqrt()
    np.testing.assert_allclose(per_dimension.numpy(), 1.0, rtol=0.05)
    # points of the latent decode to their cells' denoised expression
    np.testing.assert_allclose(model.decode(latent[:50]), model.get_denoised()[:50], rtol=1e-3, atol=1e-3)


def test_unknown_norm_fails_before_reading_the_data(pbmc_small):
    with pytest.raises(ValueError, match="norm must be one of") as raised:
        sl.models.Autoencoder(pbmc_small, norm="group")
    assert_names_fix(raised.value)


def test_normalised_input_makes_the_latent_ignore_library_size(pbmc_small):
    deeper = pbmc_small.copy()
    deeper.X = deeper.X * 3  # every cell sequenced three times as deep: same composition
    for normalize_input in (True, False):
        model = sl.models.Autoencoder(pbmc_small, normalize_input=normalize_input)
        model.fit(max_epochs=2, progress_bar=False)
        same = np.allclose(model.get_latent(deeper), model.get_latent(), atol=1e-4)
        assert same == normalize_input


@pytest.mark.parametrize("likelihood", ["zinb", "nb", "poisson", "gaussian"])
def test_bf16_mixed_keeps_parameters_and_loss_in_float32(pbmc_small, likelihood):
    """Under autocast only the matrix products run in bfloat16: the latent, the likelihood and the loss stay float32."""
    import torch

    model = sl.models.Autoencoder(pbmc_small, likelihood=likelihood)
    batch = model._inputs(None)[np.arange(64)]
    module = model.module.train()
    cov = module.covariates(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = module.encoder.body(module.encoder_input(batch["x"], batch["library"]), cov)
        mean, var = module.encode(batch["x"], cov, batch["library"])
        dist = module.decode(mean, cov, batch["library"])
        decoded = module.decoder(mean, cov)
        params = [module.likelihood.normalized_mean(decoded)]  # before any float32 library scales it
        if likelihood == "zinb":
            params.append(module.likelihood.dropout_logits(decoded))
        out = module(batch)
    assert hidden.dtype == decoded.dtype == torch.bfloat16  # the products did run in bfloat16
    assert mean.dtype == var.dtype == dist.mean.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in params)
    assert out.loss.dtype == out.reconstruction.dtype == out.kl.dtype == torch.float32
    module.eval()
    with torch.no_grad():
        full = module(batch).reconstruction
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = module(batch).reconstruction
    # bfloat16 keeps 8 bits of mantissa in the products: close to float32, not equal
    assert not torch.equal(mixed, full)
    torch.testing.assert_close(mixed, full, rtol=2e-2, atol=0.5)


def test_bf16_mixed_trains_like_float32(pbmc_small):
    """Same seed, same epochs: the held-out ELBO in float32 and with bfloat16 products agree closely."""
    elbos = {}  # measured -155.765 and -155.782 (a relative gap of 1e-4)
    for precision in ("32-true", "bf16-mixed"):
        model = sl.models.Autoencoder(pbmc_small)
        model.fit(max_epochs=20, early_stopping=False, precision=precision, progress_bar=False)
        assert model.training_info["precision"] == precision
        elbos[precision] = model.elbo(indices=model.validation_indices).mean()
    assert elbos["bf16-mixed"] != elbos["32-true"]  # Lightning's autocast did take effect
    assert elbos["bf16-mixed"] == pytest.approx(elbos["32-true"], rel=5e-3), elbos


def test_bf16_detection_matches_the_cpu_flags():
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    import torch

    if not hasattr(torch.cpu, "_is_avx512_bf16_supported"):
        pytest.skip("this torch has no bfloat16 probe: sclatent then assumes no bfloat16 units")
    flags = set(" ".join(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
    assert sl.train.cpu_has_fast_bf16() == bool({"avx512_bf16", "amx_tile"} & flags)


def test_default_precision_is_bf16_only_for_large_data_on_a_bf16_cpu(monkeypatch):
    from sclatent.models import _autoencoder

    monkeypatch.setattr(_autoencoder, "cpu_has_fast_bf16", lambda: True)
    chosen = [sl.models.default_precision(n, "cpu") for n in (2_700, 49_999, 50_000, 1_000_000)]
    assert chosen == ["32-true", "32-true", "bf16-mixed", "bf16-mixed"]
    assert sl.models.default_precision(1_000_000, "gpu") == "32-true"  # not measured on GPUs: float32
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("torch.backends.mps.is_available", lambda: False)
    assert sl.models.default_precision(1_000_000) == "bf16-mixed"  # "auto" that finds no GPU trains on the CPU
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert sl.models.default_precision(1_000_000) == "32-true"  # "auto" that finds a GPU trains there
    monkeypatch.setattr(_autoencoder, "cpu_has_fast_bf16", lambda: False)
    assert sl.models.default_precision(1_000_000, "cpu") == "32-true"


def test_fit_without_precision_trains_in_the_default_one(trained, pbmc_small, monkeypatch):
    from sclatent.models import _autoencoder

    assert trained[0].training_info["precision"] == "32-true"  # small data: float32 on any CPU
    losses = {}
    for precision in ("32-true", None):
        if precision is None:  # pbmc_small counts as large data, on a CPU with bfloat16 units
            monkeypatch.setattr(_autoencoder, "BF16_MIN_CELLS", pbmc_small.n_obs)
            monkeypatch.setattr(_autoencoder, "cpu_has_fast_bf16", lambda: True)
        model = sl.models.Autoencoder(pbmc_small)
        model.fit(max_epochs=2, accelerator="cpu", precision=precision, progress_bar=False)
        losses[precision] = model.history["validation_loss"].iloc[-1]
    assert model.training_info["precision"] == "bf16-mixed"
    assert losses[None] != losses["32-true"]  # autocast did run


@pytest.mark.parametrize(
    ("argument", "bad", "message"),
    [
        *[
            ("kl_weight", v, "kl_weight must be a positive finite number")
            for v in (0, -0.5, float("nan"), float("inf"), "0.5", True)
        ],
        *[("precision", v, "precision must be one of") for v in ("16-mixed", "bf16", 32, "64-true")],
    ],
)
def test_bad_fit_settings_fail_before_training(pbmc_small, argument, bad, message):
    model = sl.models.Autoencoder(pbmc_small)
    with pytest.raises(ValueError, match=message) as raised:
        model.fit(max_epochs=2, progress_bar=False, **{argument: bad})
    assert_names_fix(raised.value)
    assert not model.is_trained


def test_default_kl_warmup_is_a_quarter_of_the_epochs_at_most_25(trained):
    """The defaults study chose a warm-up of at most 25 epochs (it had been at most 100)."""
    model, _ = trained
    assert model.training_info["kl_warmup_epochs"] == 1  # a quarter of max_epochs=4
    assert [sl.models.default_kl_warmup_epochs(m) for m in (4, 20, 100, 101, 400)] == [1, 5, 25, 25, 25]


def test_kl_weight_scales_the_kl_term_after_warm_up(pbmc_small):
    from lightning.pytorch.callbacks import Callback

    class RecordWeight(Callback):
        def __init__(self) -> None:
            self.weights: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module):
            self.weights.append(pl_module.kl_weight)

    record = RecordWeight()
    model = sl.models.Autoencoder(pbmc_small)
    model.fit(
        max_epochs=4, kl_warmup_epochs=2, kl_weight=0.5, early_stopping=False, progress_bar=False, callbacks=[record]
    )
    assert record.weights == [0.0, 0.25, 0.5, 0.5]
    assert model.training_info["kl_weight"] == 0.5
    # the validation loss is still the evidence lower bound, which elbo() computes
    held_out = -model.elbo(indices=model.validation_indices).mean()
    assert held_out == pytest.approx(model.history["validation_loss"].iloc[-1], rel=1e-4)


def test_smaller_kl_weight_keeps_more_information_in_the_latent(pbmc_small):
    """Half the KL weight lets the posterior move further from the prior: a larger KL on every seed."""
    for seed in (0, 1):
        kl = {}
        for weight in (1.0, 0.5):
            model = sl.models.Autoencoder(pbmc_small, random_state=seed)
            model.fit(max_epochs=30, kl_weight=weight, early_stopping=False, progress_bar=False)
            cells = model._inputs(None)[np.arange(pbmc_small.n_obs)]
            with torch.no_grad():
                kl[weight] = float(model.module.eval()(cells).kl.mean())
        assert kl[0.5] > 1.2 * kl[1.0], kl
