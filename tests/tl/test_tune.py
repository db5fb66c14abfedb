"""sl.tl.tune and sl.pl.tune: optuna search over sl.tl.autoencode on PBMC 3k."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings

import anndata as ad
import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
from lightning.pytorch.callbacks import Callback

import sclatent as sl
from sclatent.tl import _tune

pytest.importorskip("optuna")
pytest.importorskip("optuna_integration")
with warnings.catch_warnings():  # imported now, as test_compare does: umap warns on its first import
    warnings.simplefilter("ignore", ImportWarning)
    try:
        import scib_metrics
    except ImportError:
        scib_metrics = None
needs_scib_metrics = pytest.mark.skipif(scib_metrics is None, reason="needs scib-metrics")
mpl.use("Agg")

#: A short search: the first 5 trials run in full, later ones can be pruned from epoch 10 (pruner="median").
SEARCH = {"n_trials": 7, "max_epochs": 12, "random_state": 0}


@pytest.fixture(scope="module")
def pbmc(pbmc_hvg) -> ad.AnnData:
    """A quarter of the PBMC 3k cells, 500 genes: real data, a few seconds a trial."""
    return pbmc_hvg[::4, :500].copy()


@pytest.fixture(scope="module")
def tuned(pbmc):
    adata = pbmc.copy()
    sl.tl.tune(adata, **SEARCH)
    return adata


def _trials(adata):
    return adata.uns["sclatent"]["tune"]["trials"]


def test_search_prunes_and_records_every_trial(tuned):
    record = tuned.uns["sclatent"]["tune"]
    trials = record["trials"]
    space = list(_tune.DEFAULT_SEARCH_SPACE)
    assert list(trials.columns) == ["number", "state", "value", *space, "n_epochs", "duration_s"]
    assert trials["number"].tolist() == list(range(SEARCH["n_trials"]))
    states = trials["state"].tolist()
    assert set(states) <= {"complete", "pruned"}
    assert states[: _tune.MEDIAN_STARTUP_TRIALS] == ["complete"] * _tune.MEDIAN_STARTUP_TRIALS
    pruned = trials[trials["state"] == "pruned"]
    complete = trials[trials["state"] == "complete"]
    assert len(pruned) >= 1  # the median pruner really stopped a trial...
    # ...after its warm-up and before the end, on the validation loss that sclatent logs
    assert pruned["n_epochs"].between(_tune.MEDIAN_WARMUP_EPOCHS + 1, SEARCH["max_epochs"] - 1).all()
    assert pruned["value"].isna().all()
    assert (complete["n_epochs"] == SEARCH["max_epochs"]).all()
    assert complete["value"].notna().all()
    curves = record["validation_loss"]
    assert curves.shape == (SEARCH["n_trials"], SEARCH["max_epochs"])
    for i, n in enumerate(trials["n_epochs"]):
        assert np.isfinite(curves[i, :n]).all()
        assert np.isnan(curves[i, n:]).all()
    # every value lies in the search space
    assert trials["n_latent"].between(8, 32).all()
    assert trials["learning_rate"].between(1e-4, 1e-2).all()
    assert set(trials["likelihood"].astype(str)) <= {"zinb", "nb"}
    assert len(set(trials["learning_rate"])) == SEARCH["n_trials"]
    # the best trial is the complete trial with the lowest validation loss
    best = complete.loc[complete["value"].idxmin()]
    assert record["best_trial"] == best["number"]
    assert record["best_value"] == best["value"]
    assert set(record["best_params"]) == set(space)
    for k in space:
        assert record["best_params"][k] == best[k]
    assert record["params"]["direction"] == "minimize"
    assert record["params"]["pruner"] == "MedianPruner"
    assert set(record["importances"]) == set(space)
    assert sum(record["importances"].values()) == pytest.approx(1)


def test_refit_writes_what_autoencode_writes(tuned, pbmc):
    record = tuned.uns["sclatent"]["tune"]
    direct = pbmc.copy()
    sl.tl.autoencode(
        direct, **record["best_params"], max_epochs=SEARCH["max_epochs"], random_state=0, progress_bar=False
    )
    np.testing.assert_array_equal(tuned.obsm["X_sclatent"], direct.obsm["X_sclatent"])
    np.testing.assert_array_equal(tuned.layers["sclatent_denoised"], direct.layers["sclatent_denoised"])
    got, want = tuned.uns["sclatent"], direct.uns["sclatent"]
    assert set(got) == {*want, "tune"}
    assert got["params"] == want["params"]
    for k in want["history"]:
        np.testing.assert_array_equal(got["history"][k], want["history"][k])
    assert {k: v for k, v in got["training"].items() if k != "train_time_s"} == {
        k: v for k, v in want["training"].items() if k != "train_time_s"
    }
    # the refit reproduces the best trial: its validation loss at the kept epoch is the best value
    assert got["history"]["validation_loss"][got["training"]["best_epoch"]] == record["best_value"]


def test_same_seed_gives_same_trials(tuned, pbmc):
    again = pbmc.copy()
    sl.tl.tune(again, **SEARCH, refit=False)
    first, second = _trials(tuned), _trials(again)
    pd.testing.assert_frame_equal(first.drop(columns="duration_s"), second.drop(columns="duration_s"))
    assert again.uns["sclatent"]["tune"]["best_params"] == tuned.uns["sclatent"]["tune"]["best_params"]
    np.testing.assert_array_equal(
        again.uns["sclatent"]["tune"]["validation_loss"], tuned.uns["sclatent"]["tune"]["validation_loss"]
    )
    assert set(again.uns["sclatent"]) == {"tune"}  # refit=False trains nothing more
    assert "X_sclatent" not in again.obsm


def test_h5ad_round_trip_and_plot(tuned, tmp_path):
    path = tmp_path / "tuned.h5ad"
    tuned.write_h5ad(path)
    back = ad.read_h5ad(path)
    record, read = tuned.uns["sclatent"]["tune"], back.uns["sclatent"]["tune"]
    pd.testing.assert_frame_equal(read["trials"], record["trials"], check_categorical=False)
    assert read["best_params"] == record["best_params"]
    np.testing.assert_array_equal(read["validation_loss"], record["validation_loss"])
    assert read["importances"] == pytest.approx(record["importances"])
    # the plot needs only what the file holds
    axes = sl.pl.tune(back, show=False, save=tmp_path / "tune.png")
    assert len(axes) == 2
    assert (tmp_path / "tune.png").stat().st_size > 15_000
    labels = [t.get_text() for t in axes[1].get_yticklabels()]
    assert set(labels) == set(_tune.DEFAULT_SEARCH_SPACE)


def test_bad_input_fails_before_any_trial(pbmc, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a trial started")

    monkeypatch.setattr(_tune, "autoencode", no_training)
    adata = pbmc.copy()
    cases = [
        ({"metric": "accuracy"}, ValueError, "metric must be"),
        ({"search_space": {"n_latnet": (8, 32)}}, ValueError, "not a parameter of sl.tl.autoencode"),
        ({"search_space": {"layer": ["counts"]}}, ValueError, "setting of the run"),
        ({"search_space": {"n_latent": (8, 32)}, "n_latent": 10}, ValueError, "both searched"),
        ({"search_space": {"n_latent": (32, 8)}}, ValueError, "low < high"),
        ({"search_space": {"n_latent": 10}}, ValueError, "not a range or choices"),
        ({"search_space": {"learning_rate": (0, 1e-2, "log")}}, ValueError, "low > 0 for a log scale"),
        ({"search_space": {"likelihood": []}}, ValueError, "non-empty list of choices"),
        ({"metric": "bio"}, ValueError, "pass label_key"),
        ({"metric": "batch", "label_key": "cell_type"}, ValueError, "pass batch_key"),
        *([({"metric": "total", "label_key": "celltype"}, KeyError, "not a column")] if scib_metrics else []),
        ({"label_key": "cell_type"}, ValueError, "needs no labels"),
        ({"n_trials": 0}, ValueError, "n_trials must be"),
        ({"n_trials": None}, ValueError, "pass timeout="),
        ({"timeout": -1}, ValueError, "timeout must be"),
        ({"pruner": "hyperband"}, ValueError, "pruner must be"),
        ({"n_epochs": 10}, TypeError, "unexpected keyword argument 'n_epochs'"),
        ({"copy": True}, ValueError, r"adata.copy\(\)"),
        ({"validation_fraction": 0}, ValueError, "validation_fraction > 0"),
        ({"transform_batch": "10x"}, ValueError, "needs batch_key"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            sl.tl.tune(adata, **kwargs)
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ImportError, match=r"pip install 'sclatent\[tune\]'"):
        sl.tl.tune(adata)
    assert set(adata.uns) == set(pbmc.uns)
    with pytest.raises(KeyError, match=r"run `sl\.tl\.tune"):
        sl.pl.tune(adata, show=False)


@needs_scib_metrics
def test_label_metric_is_maximised(pbmc_small):
    adata = pbmc_small
    sl.tl.tune(
        adata,
        metric="bio",
        label_key="cell_type",
        search_space={"n_latent": (4, 16)},
        n_trials=2,
        max_epochs=5,
        refit=False,
    )
    record = adata.uns["sclatent"]["tune"]
    trials = record["trials"]
    assert (trials["state"] == "complete").all()
    assert trials["value"].between(0, 1).all()
    assert record["params"]["direction"] == "maximize"
    assert record["best_value"] == trials["value"].max()
    assert "X_sclatent" not in adata.obsm  # refit=False
    assert len(sl.pl.tune(adata, show=False)) == 2


class _Interrupt(Callback):
    """Send Ctrl+C (SIGINT) to this process during the given fit (1 = the first)."""

    def __init__(self, fit: int) -> None:
        self.fit, self.fits = fit, 0

    def on_fit_start(self, trainer, pl_module) -> None:
        self.fits += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.fits == self.fit and trainer.current_epoch == 0:
            os.kill(os.getpid(), signal.SIGINT)


def test_callable_metric_and_interrupt_keeps_finished_trials(pbmc_small):
    adata = pbmc_small
    seen = []

    def spread(trial_adata):  # maximised; sees the trial's results, while adata is untouched
        seen.append(("X_sclatent" in adata.obsm, "sclatent" in trial_adata.uns))
        return float(trial_adata.obsm["X_sclatent"].std())

    with pytest.warns(UserWarning, match="interrupted"):
        sl.tl.tune(
            adata,
            metric=spread,
            search_space={"n_latent": (4, 16)},
            n_trials=5,
            max_epochs=3,
            pruner="none",
            callbacks=[_Interrupt(fit=3)],
        )
    record = adata.uns["sclatent"]["tune"]
    assert record["trials"]["state"].tolist() == ["complete", "complete", "interrupted"]
    assert seen == [(False, True), (False, True)]
    assert record["params"]["interrupted"]
    assert record["params"]["metric"] == "test_callable_metric_and_interrupt_keeps_finished_trials.<locals>.spread"
    best = record["trials"].iloc[:2]["value"].idxmax()
    assert record["best_params"]["n_latent"] == record["trials"].loc[best, "n_latent"]
    # the refit trained the best finished trial's model, in full
    assert adata.obsm["X_sclatent"].shape[1] == record["best_params"]["n_latent"]
    assert adata.uns["sclatent"]["training"]["complete"]


class _FailFit(Callback):
    """Raise during the given fit (1 = the first), as a failing refit would."""

    def __init__(self, fit: int) -> None:
        self.fit, self.fits = fit, 0

    def on_fit_start(self, trainer, pl_module) -> None:
        self.fits += 1
        if self.fits == self.fit:
            raise RuntimeError("the refit failed")


def test_failed_refit_keeps_the_trials(pbmc_small):
    adata = pbmc_small
    with pytest.raises(RuntimeError, match="the refit failed") as raised:
        sl.tl.tune(adata, search_space={"n_latent": (4, 16)}, n_trials=2, max_epochs=2, callbacks=[_FailFit(fit=3)])
    assert "trials are kept" in "".join(raised.value.__notes__)
    record = adata.uns["sclatent"]["tune"]
    assert record["trials"]["state"].tolist() == ["complete", "complete"]
    assert not record["params"]["refit"]
    assert "the refit failed" in record["params"]["refit_error"]
    assert "X_sclatent" not in adata.obsm


def test_interrupt_before_any_finished_trial_leaves_adata_unchanged(pbmc_small):
    adata = pbmc_small
    before = set(adata.uns), set(adata.obsm), set(adata.layers)
    with pytest.warns(UserWarning, match="interrupted") as warned:
        sl.tl.tune(adata, search_space={"n_latent": (4, 16)}, n_trials=3, max_epochs=3, callbacks=[_Interrupt(fit=1)])
    assert any("before any trial finished" in str(w.message) for w in warned)
    assert (set(adata.uns), set(adata.obsm), set(adata.layers)) == before


def test_diverged_trials_fail_and_the_search_goes_on(pbmc_small, monkeypatch):
    calls = []

    def diverge_second(*args, **kwargs):
        calls.append(kwargs["n_latent"])
        if len(calls) == 2:
            raise FloatingPointError("Training diverged")
        return sl.tl.autoencode(*args, **kwargs)

    monkeypatch.setattr(_tune, "autoencode", diverge_second)
    adata = pbmc_small
    sl.tl.tune(adata, search_space={"n_latent": (4, 16)}, n_trials=3, max_epochs=2, refit=False)
    assert _trials(adata)["state"].tolist() == ["complete", "failed", "complete"]
    monkeypatch.setattr(_tune, "autoencode", lambda *a, **k: (_ for _ in ()).throw(FloatingPointError("diverged")))
    with pytest.raises(RuntimeError, match="none of the 2 trials completed"):
        sl.tl.tune(adata, search_space={"n_latent": (4, 16)}, n_trials=2, key_added="none")
    assert "none" not in adata.uns


def test_import_leaves_optuna_for_later():
    code = "import sys, sclatent as sl\nsl.tl.tune, sl.pl.tune\nprint('optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
