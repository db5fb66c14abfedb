"""Training that goes wrong: divergence, interrupts, time limits, checkpoints, reruns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

import sclatent as sl

from sclatent_test_helpers import assert_names_fix, assert_unchanged, snapshot


@pytest.fixture
def small(pbmc_small):
    return pbmc_small[:, :200].copy()


class PoisonWeights(Callback):
    """Sets a decoder weight to NaN at the start of an epoch, as a numerical blow-up would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                pl_module.module.likelihood.scale.weight[0, 0] = float("nan")


def test_divergence_stops_at_once_with_advice(small):
    before = snapshot(small)
    with pytest.raises(FloatingPointError, match=r"diverged.*lower learning_rate.*best"):
        sl.tl.autoencode(small, max_epochs=10, callbacks=[PoisonWeights(3)], progress_bar=False)
    assert_unchanged(small, before)  # nothing written: never a NaN latent


class PoisonAtBatch(Callback):
    """Sets a decoder weight to NaN before one training step, mid-epoch."""

    def __init__(self, epoch: int, batch: int = 1) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            with torch.no_grad():
                pl_module.module.likelihood.scale.weight[0, 0] = float("nan")


def test_divergence_checked_once_per_epoch_puts_back_the_epochs_first_weights(small, monkeypatch):
    # a GPU or several processes check the loss once per epoch, after the diverged steps were taken;
    # with no best epoch to fall back on, the model must not keep NaN weights
    monkeypatch.setattr(sl.train.TrainingPlan, "_checks_each_step", lambda self: False)
    model = sl.models.Autoencoder(small)
    with pytest.raises(FloatingPointError, match=r"diverged.*last finite weights"):
        model.fit(
            max_epochs=10,
            early_stopping=False,
            validation_fraction=0,
            batch_size=64,
            callbacks=[PoisonAtBatch(2)],
            progress_bar=False,
        )
    assert all(torch.isfinite(p).all() for p in model.module.parameters())
    assert np.isfinite(model.get_latent()).all()


def test_divergence_keeps_best_weights_in_the_model(small):
    model = sl.models.Autoencoder(small)
    with pytest.raises(FloatingPointError):
        model.fit(max_epochs=10, callbacks=[PoisonWeights(3)], progress_bar=False)
    assert all(torch.isfinite(p).all() for p in model.module.parameters())
    assert np.isfinite(model.get_latent()).all()


def test_a_resumed_fit_that_diverges_keeps_latent_axes_of_the_weights_it_keeps(small):
    model = sl.models.Autoencoder(small).fit(max_epochs=4, progress_bar=False)
    first_axes = model.module.latent_axes.clone()
    with pytest.raises(FloatingPointError):
        model.fit(max_epochs=10, callbacks=[PoisonWeights(3)], progress_bar=False)
    assert model.latent_axes_fitted
    kept = model.module.latent_axes.clone()
    assert not torch.equal(kept, first_axes)  # the weights moved on, and so did the axes
    model._fit_latent_axes(model._inputs(None), model.train_indices)
    torch.testing.assert_close(model.module.latent_axes, kept)  # they are the kept weights' own


def test_a_fit_refused_before_training_leaves_a_trained_model_usable(small):
    model = sl.models.Autoencoder(small).fit(max_epochs=2, progress_bar=False)
    latent = model.get_latent()
    with pytest.raises(ValueError, match="precision"):
        model.fit(max_epochs=2, precision="16-mixed", progress_bar=False)  # refused inside the training loop
    assert model.latent_axes_fitted
    np.testing.assert_array_equal(model.get_latent(), latent)


def test_weights_that_are_not_finite_give_the_divergence_error_not_a_linear_algebra_one(small):
    model = sl.models.Autoencoder(small).fit(max_epochs=2, progress_bar=False)
    with torch.no_grad():
        model.module.likelihood.scale.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"not finite.*learning_rate") as raised:
        model._fit_latent_axes(model._inputs(None), model.train_indices)
    assert_names_fix(raised.value)


class NoForwardMode(torch.autograd.Function):
    """The identity, with a backward but no forward-mode derivative (as some hand-written kernels have)."""

    @staticmethod
    def forward(x):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad


def test_a_decoder_without_forward_mode_is_refused_before_training(small):
    model = sl.models.Autoencoder(small)
    decoded = model.module.normalized_mean
    model.module.normalized_mean = lambda z, cov: NoForwardMode.apply(decoded(z, cov))
    with pytest.raises(TypeError, match=r"forward-mode.*rescale_latent=False") as raised:
        model.fit(max_epochs=2, progress_bar=False)
    assert_names_fix(raised.value)
    assert not model.is_trained  # no training was spent first
    assert model.trained_epochs == 0
    model.config.rescale_latent = False  # the way out the message names
    model.fit(max_epochs=1, progress_bar=False)
    assert np.isfinite(model.get_latent()).all()


def test_models_on_the_posterior_mean_load_with_other_data(small, tmp_path):
    model = sl.models.Autoencoder(small, rescale_latent=False)
    model.fit(max_epochs=3, checkpoint_dir=tmp_path / "checkpoint", progress_bar=False)
    model.save(tmp_path / "model")
    query = small[:50].copy()
    for name in ("model", "checkpoint"):
        loaded = sl.models.Autoencoder.load(tmp_path / name, query)
        assert loaded.get_latent().shape == (50, model.config.n_latent)
    loaded = sl.models.Autoencoder.load(tmp_path / "model", query)
    np.testing.assert_allclose(loaded.get_latent(), model.get_latent(query), rtol=1e-5, atol=1e-6)


def test_a_checkpoint_with_other_cells_of_the_same_number_is_refused(small, tmp_path):
    sl.models.Autoencoder(small).fit(max_epochs=2, checkpoint_dir=tmp_path / "c", progress_bar=False)
    other = small.copy()
    other.X = other.X.copy()
    other.X.data[0] += 1  # the same shape, other counts
    with pytest.raises(ValueError, match="trained on") as raised:
        sl.models.Autoencoder.load(tmp_path / "c", other)
    assert_names_fix(raised.value)
    reordered = small[np.r_[1, 0, 2 : small.n_obs]].copy()  # the same cells and counts, two of them swapped
    with pytest.raises(ValueError, match="trained on"):
        sl.models.Autoencoder.load(tmp_path / "c", reordered)
    assert sl.models.Autoencoder.load(tmp_path / "c", small).latent_axes_fitted
    # a checkpoint of the release before, which recorded the shape and the sum of the stored counts only
    meta = json.loads((tmp_path / "c" / "config.json").read_text())
    meta["data_fingerprint"] = [list(small.shape), float(np.sum(small.X.data, dtype=np.float64))]
    (tmp_path / "c" / "config.json").write_text(json.dumps(meta))
    assert sl.models.Autoencoder.load(tmp_path / "c", small).latent_axes_fitted
    with pytest.raises(ValueError, match="trained on"):
        sl.models.Autoencoder.load(tmp_path / "c", other)


class InterruptAt(Callback):
    """Sends SIGINT to this process, as Ctrl+C or Jupyter's interrupt does."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGINT)


def test_interrupt_keeps_best_weights_and_marks_incomplete(small):
    handler = signal.getsignal(signal.SIGINT)
    with pytest.warns(UserWarning, match="interrupted"):
        model = sl.tl.autoencode(
            small, max_epochs=50, callbacks=[InterruptAt(4)], progress_bar=False, return_model=True
        )
    info = small.uns["sclatent"]["training"]
    assert info["stop_reason"] == "interrupted"
    assert not info["complete"]
    assert info["n_epochs"] <= 6
    # what was written is consistent with the weights the model holds (the best so far)
    np.testing.assert_array_equal(small.obsm["X_sclatent"], model.get_latent())
    assert model.history["validation_loss"].idxmin() == info["best_epoch"]
    assert signal.getsignal(signal.SIGINT) is handler  # the user's Ctrl+C works again


def test_time_limit_marks_incomplete(small):
    with pytest.warns(UserWarning, match="max_time"):
        sl.tl.autoencode(small, max_epochs=10_000, max_time="00:00:00:02", progress_bar=False, denoise=False)
    info = small.uns["sclatent"]["training"]
    assert info["stop_reason"] == "max_time"
    assert not info["complete"]
    assert 1 <= info["n_epochs"] < 10_000


class SlowLastValidation(Callback):
    """Sleeps at the end of the last epoch's validation, so that only it passes a time limit."""

    def __init__(self, epoch: int, seconds: float) -> None:
        self.epoch, self.seconds = epoch, seconds

    def on_validation_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            time.sleep(self.seconds)


def test_time_limit_passed_only_by_the_last_validation_is_a_complete_run(small):
    model = sl.models.Autoencoder(small).fit(
        # the two epochs take about 1 s; the limit leaves room for a machine slowed by other work
        max_epochs=2, max_time="00:00:00:10", early_stopping=False, callbacks=[SlowLastValidation(1, 10.5)],
        progress_bar=False,
    )  # fmt: skip
    assert model.training_info["n_epochs"] == 2
    assert model.training_info["stop_reason"] == "max_epochs"
    assert model.training_info["complete"]


class StopAt(Callback):
    """Stops training at the end of an epoch, as a user's own stopping rule would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def test_a_callback_that_stops_training_is_named_as_the_reason(small):
    with pytest.warns(UserWarning, match=r"stopped early \(callback\) after 2 epochs"):
        sl.tl.autoencode(small, max_epochs=10, callbacks=[StopAt(1)], progress_bar=False, denoise=False)
    info = small.uns["sclatent"]["training"]
    assert info["stop_reason"] == "callback"
    assert not info["complete"]
    assert info["n_epochs"] == 2


def test_complete_run_is_marked_complete(small):
    sl.tl.autoencode(small, max_epochs=3, progress_bar=False, denoise=False)
    assert small.uns["sclatent"]["training"]["complete"]
    assert small.uns["sclatent"]["training"]["stop_reason"] == "max_epochs"


def test_checkpoint_saves_best_and_training_resumes(small, tmp_path):
    model = sl.models.Autoencoder(small)
    model.fit(max_epochs=8, checkpoint_dir=tmp_path / "ckpt", progress_bar=False)
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["trained_epochs"] == model.training_info["best_epoch"] + 1
    resumed = sl.models.Autoencoder.load(tmp_path / "ckpt", small)
    # the checkpoint holds the best weights, which fit restored at the end
    np.testing.assert_array_equal(resumed.get_latent(), model.get_latent())
    # and is a trained model of its own (map_query and denoise accept it): split, history so far, settings
    assert resumed.is_trained
    assert resumed.training_info["stop_reason"] == "checkpoint"
    assert not resumed.training_info["complete"]
    assert resumed.training_info["kl_weight"] == model.training_info["kl_weight"]
    np.testing.assert_array_equal(resumed.validation_indices, model.validation_indices)
    # the latent's axes are set from the training data when the checkpoint is loaded with it, not at every improvement
    assert not saved["latent_axes_fitted"]
    bare = sl.models.Autoencoder.load(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="checkpoint") as raised:
        bare.get_latent(small)
    assert_names_fix(raised.value)
    with pytest.raises(ValueError, match="trained on") as raised:
        sl.models.Autoencoder.load(tmp_path / "ckpt", small[:100].copy())
    assert_names_fix(raised.value)
    n_saved = saved["trained_epochs"]
    assert len(resumed.history) == n_saved
    np.testing.assert_allclose(resumed.history["validation_loss"], model.history["validation_loss"][:n_saved])
    np.testing.assert_allclose(resumed.history["train_loss"][:-1], model.history["train_loss"][: n_saved - 1])
    first = resumed.elbo(indices=model.validation_indices).mean()
    resumed.fit(max_epochs=5, early_stopping=False, progress_bar=False)
    assert resumed.training_info["kl_warmup_epochs"] == 0  # no warm-up again when resuming
    assert resumed.trained_epochs == saved["trained_epochs"] + 5
    assert np.isfinite(resumed.get_latent()).all()
    assert np.isfinite(first)


def test_checkpoint_names_the_held_out_groups(small, tmp_path):
    groups = small.obs["donor_batch"].to_numpy()
    model = sl.models.Autoencoder(small).fit(
        max_epochs=2, validation_groups=groups, checkpoint_dir=tmp_path / "ckpt", progress_bar=False
    )
    resumed = sl.models.Autoencoder.load(tmp_path / "ckpt", small)
    assert resumed.training_info["validation_groups"] == model.training_info["validation_groups"]
    assert len(resumed.training_info["validation_groups"]) == 1


def test_checkpoint_without_early_stopping_keeps_final_weights(small, tmp_path):
    model = sl.models.Autoencoder(small)
    model.fit(max_epochs=6, early_stopping=False, checkpoint_dir=tmp_path / "c", progress_bar=False)
    best = sl.models.Autoencoder.load(tmp_path / "c", small)
    final_score = model.elbo(indices=model.validation_indices).mean()
    best_score = best.elbo(indices=model.validation_indices).mean()
    assert best_score >= final_score - 1e-3  # the checkpoint is the best epoch
    if model.history["validation_loss"].idxmin() != len(model.history) - 1:
        assert not np.array_equal(best.get_latent(), model.get_latent())  # the model kept its last weights


def test_checkpoint_dir_that_cannot_be_written_fails_before_training(small, tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    model = sl.models.Autoencoder(small)
    with pytest.raises(ValueError, match=r"checkpoint_dir .*a_file.* is a file.*pass a directory"):
        model.fit(max_epochs=2, checkpoint_dir=tmp_path / "a_file", progress_bar=False)
    assert not model.is_trained
    assert (tmp_path / "a_file").read_text() == "not a directory"


def test_elbo_of_no_cells_is_empty(small):
    model = sl.models.Autoencoder(small).fit(
        max_epochs=1, validation_fraction=0, early_stopping=False, progress_bar=False
    )
    assert len(model.validation_indices) == 0
    assert model.elbo(indices=model.validation_indices).shape == (0,)


def test_elbo_of_a_boolean_mask_scores_the_cells_it_selects(small):
    model = sl.models.Autoencoder(small).fit(max_epochs=1, early_stopping=False, progress_bar=False)
    every = model.elbo()
    mask = np.zeros(small.n_obs, dtype=bool)
    mask[[5, 17, 40]] = True
    np.testing.assert_allclose(model.elbo(indices=mask), every[[5, 17, 40]], rtol=1e-5)
    with pytest.raises(ValueError, match="one entry per cell"):
        model.elbo(indices=mask[:-1])


def test_loaded_model_without_data_cannot_train(small, tmp_path):
    sl.models.Autoencoder(small).save(tmp_path / "m")
    with pytest.raises(ValueError, match=r"Autoencoder\.load\(path, adata\)"):
        sl.models.Autoencoder.load(tmp_path / "m").fit(max_epochs=1)


def test_truncated_config_is_a_clear_error(small, tmp_path):
    model = sl.models.Autoencoder(small)
    model.save(tmp_path / "m")
    text = (tmp_path / "m" / "config.json").read_text()
    (tmp_path / "m" / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="corrupted"):
        sl.models.Autoencoder.load(tmp_path / "m")


_SCRIPT = textwrap.dedent(
    """
    import json, sys, numpy as np, sclatent as sl
    adata = sl.datasets.pbmc3k()[:400].copy()
    adata = adata[:, np.asarray((adata.X > 0).sum(0)).ravel() >= 20].copy()
    sl.tl.autoencode(adata, max_epochs=3, random_state=7, progress_bar=False, denoise=False)
    sys.stdout.write(json.dumps(adata.obsm["X_sclatent"].tolist()))
    """
)


def _latent_in_process(seed: int) -> np.ndarray:
    adata = sl.datasets.pbmc3k()[:400].copy()
    adata = adata[:, np.asarray((adata.X > 0).sum(0)).ravel() >= 20].copy()
    sl.tl.autoencode(adata, max_epochs=3, random_state=seed, progress_bar=False, denoise=False)
    return adata.obsm["X_sclatent"]


def test_same_seed_same_latent_across_processes():
    """Bit for bit, also for the first fit of a fresh process (see ``_warm_up`` in the model)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    runs = [
        np.array(
            json.loads(
                subprocess.run(
                    [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True, env=env
                ).stdout
            ),
            dtype=np.float32,
        )
        for _ in range(2)
    ]
    here = _latent_in_process(7)
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], here)
    assert np.abs(_latent_in_process(8) - here).max() > 0.05  # and the seed matters


def test_counts_changed_in_place_after_the_model_read_them_are_refused(small):
    import scanpy as sc

    model = sl.models.Autoencoder(small)  # the model uses small.X without copying it
    sc.pp.normalize_total(small)
    sc.pp.log1p(small)
    with pytest.raises(ValueError, match=r"has changed since, in place.*layer='counts'"):
        model.fit(max_epochs=1, progress_bar=False)
    with pytest.raises(ValueError, match="has changed since, in place"):
        model.get_latent()
    assert not model.is_trained


def test_dropping_explicit_zeros_after_the_model_read_the_counts_changes_nothing(small):
    small.X = small.X.tocsr()
    small.X.data[::7] = 0  # explicit zeros, as some writers leave them
    model = sl.models.Autoencoder(small)
    latent = model.get_latent()
    small.X.eliminate_zeros()  # in place: fewer stored entries, the same values
    np.testing.assert_array_equal(model.get_latent(), latent)
