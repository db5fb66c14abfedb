"""Bad input gets a clear error before any training, and leaves the AnnData as it was."""

from __future__ import annotations

import numpy as np
import pytest

import sclatent as sl


def _snapshot(adata):
    return {
        "X": adata.X.toarray().copy(),
        "layers": {k: v.toarray().copy() for k, v in adata.layers.items()},
        "obs": adata.obs.copy(),
        "obsm": set(adata.obsm),
        "uns": set(adata.uns),
    }


def _unchanged(adata, snap):
    assert np.array_equal(adata.X.toarray(), snap["X"], equal_nan=True)
    assert set(adata.layers) == set(snap["layers"])
    for k, v in snap["layers"].items():
        assert np.array_equal(adata.layers[k].toarray(), v, equal_nan=True)
    assert adata.obs.equals(snap["obs"])
    assert set(adata.obsm) == snap["obsm"]
    assert set(adata.uns) == snap["uns"]


def _set_value(adata, value):
    X = adata.X.tocsr(copy=True)
    X.data[0] = value
    adata.X = X


CASES = {
    "non-integer counts": (lambda a: _set_value(a, 1.5), {}, ValueError, "non-integer values.*likelihood='gaussian'"),
    "negative counts": (lambda a: _set_value(a, -1), {}, ValueError, "negative values"),
    "NaN": (lambda a: _set_value(a, np.nan), {}, ValueError, "NaN or infinite"),
    "inf": (lambda a: _set_value(a, np.inf), {}, ValueError, "NaN or infinite"),
    "NaN with gaussian": (lambda a: _set_value(a, np.nan), {"likelihood": "gaussian"}, ValueError, "NaN or infinite"),
    "missing layer": (lambda a: None, {"layer": "raw_counts"}, KeyError, "layer 'raw_counts' not found"),
    "missing batch_key": (lambda a: None, {"batch_key": "sample"}, KeyError, r"\['sample'\] not found in adata.obs"),
    "NaN in batch": (
        lambda a: a.obs.__setitem__("donor_batch", a.obs["donor_batch"].where(np.arange(a.n_obs) > 0)),
        {"batch_key": "donor_batch"},
        ValueError,
        "missing values",
    ),
    "NaN in continuous covariate": (
        lambda a: a.obs.__setitem__("pct_mito", a.obs["pct_mito"].where(np.arange(a.n_obs) > 0)),
        {"continuous_covariate_keys": ["pct_mito"]},
        ValueError,
        "finite numbers",
    ),
    "all-zero cells": (
        lambda a: a.X.__setitem__(slice(0, 3), 0),
        {},
        ValueError,
        "3 cells have no counts.*filter_cells",
    ),
    "n_latent < 1": (lambda a: None, {"n_latent": 0}, ValueError, "n_latent must be an integer ≥ 1"),
    "unknown likelihood": (lambda a: None, {"likelihood": "zip"}, ValueError, "Unknown likelihood 'zip'"),
    "unknown transform_batch": (
        lambda a: None,
        {"batch_key": "donor_batch", "transform_batch": "c"},
        ValueError,
        "transform_batch='c'",
    ),
}


@pytest.mark.filterwarnings("ignore::scipy.sparse.SparseEfficiencyWarning")
@pytest.mark.parametrize("case", CASES)
def test_bad_input_raises_before_training(pbmc_small, case, monkeypatch):
    corrupt, kwargs, error, match = CASES[case]
    corrupt(pbmc_small)
    snap = _snapshot(pbmc_small)

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(sl.models.Autoencoder, "fit", no_training)
    with pytest.raises(error, match=match):
        sl.tl.autoencode(pbmc_small, progress_bar=False, **kwargs)
    _unchanged(pbmc_small, snap)


def test_too_few_cells(pbmc_small):
    with pytest.raises(ValueError, match=f"training needs at least {sl.models.MIN_CELLS}"):
        sl.tl.autoencode(pbmc_small[:5].copy(), progress_bar=False)


def test_duplicate_gene_names(pbmc_small):
    pbmc_small.var_names = ["g"] * pbmc_small.n_vars
    with pytest.raises(ValueError, match="var_names_make_unique"):
        sl.tl.autoencode(pbmc_small, progress_bar=False)


def test_early_stopping_needs_validation(pbmc_small):
    with pytest.raises(ValueError, match="validation_fraction > 0"):
        sl.tl.autoencode(pbmc_small, validation_fraction=0, progress_bar=False)
