"""Bad and unusual input, tried as a new user would get it wrong.

Every case either works correctly or raises a clear, typed error before any training, and a
failed call leaves every slot of the AnnData as it was.
"""

from __future__ import annotations

import inspect

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sclatent as sl

from sclatent_test_helpers import assert_names_fix, assert_unchanged, snapshot

N_LATENT = inspect.signature(sl.tl.autoencode).parameters["n_latent"].default
FAST = {"max_epochs": 2, "n_hidden": 16, "progress_bar": False, "random_state": 0}


@pytest.fixture
def tiny(pbmc_hvg) -> ad.AnnData:
    """200 real PBMC cells × 100 genes, raw counts, CSR float32, with a two-level batch."""
    rng = np.random.default_rng(0)
    cells = np.sort(rng.choice(pbmc_hvg.n_obs, 200, replace=False))
    adata = pbmc_hvg[cells, :100].copy()
    adata = adata[np.asarray(adata.X.sum(1)).ravel() > 0].copy()
    adata.obs["batch"] = np.where(np.arange(adata.n_obs) % 2 == 0, "b1", "b2")
    adata.obs["pct"] = rng.uniform(0, 5, adata.n_obs)
    return adata


def _no_training(monkeypatch):
    def fit(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(sl.models.Autoencoder, "fit", fit)


# ----------------------------------------------------------------------------- works correctly
@pytest.mark.parametrize("fmt", ["csr", "csc", "dense"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_storage_does_not_change_the_result(tiny, fmt, dtype):
    reference = tiny.copy()
    sl.tl.autoencode(reference, **FAST)
    other = tiny.copy()
    X = other.X.astype(dtype)
    other.X = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "dense": lambda m: m.toarray()}[fmt](X)
    before = _X_bytes(other)
    sl.tl.autoencode(other, **FAST)
    np.testing.assert_allclose(other.obsm["X_sclatent"], reference.obsm["X_sclatent"], rtol=1e-5, atol=1e-6)
    assert _X_bytes(other) == before


def _X_bytes(adata):
    X = adata.X
    return (X.toarray() if sp.issparse(X) else np.asarray(X)).tobytes()


def test_view_works(tiny):
    tiny = tiny[np.asarray(tiny.X[:, :50].sum(1)).ravel() > 0].copy()
    reference = tiny[:, :50].copy()
    sl.tl.autoencode(reference, **FAST)
    view = tiny[:, :50]
    with pytest.warns(ad.ImplicitModificationWarning):
        sl.tl.autoencode(view, **FAST)
    np.testing.assert_array_equal(view.obsm["X_sclatent"], reference.obsm["X_sclatent"])


@pytest.mark.parametrize("storage", ["sparse", "dense"])
def test_backed_works(tiny, tmp_path, storage):
    if storage == "dense":
        tiny.X = tiny.X.toarray()
    tiny.write_h5ad(tmp_path / "t.h5ad")
    backed = ad.read_h5ad(tmp_path / "t.h5ad", backed="r")
    model = sl.tl.autoencode(backed, denoise=False, return_model=True, **FAST)
    # trained out of core, chunk by chunk (tests/train/test_disk.py checks the batches and the quality)
    assert "chunks of" in model.training_info["batches"]
    assert np.isfinite(backed.obsm["X_sclatent"]).all()
    np.testing.assert_allclose(model.get_latent(backed), backed.obsm["X_sclatent"], rtol=1e-6)
    np.testing.assert_allclose(model.get_latent(tiny), backed.obsm["X_sclatent"], rtol=1e-5, atol=1e-6)
    backed.file.close()


@pytest.mark.parametrize(
    "case",
    [
        "duplicate obs_names",
        "single batch category",
        "numeric batch",
        "batch category with one cell",
        "n_latent larger than genes",
        "fewer cells than batch_size",
        "genes with no counts",
        "integer counts as float64 layer",
    ],
)
def test_unusual_but_valid_input_works(tiny, case):
    adata, kwargs = tiny, {}
    if case == "duplicate obs_names":
        adata.obs_names = ["cell"] * adata.n_obs
    elif case == "single batch category":
        adata.obs["batch"] = "only"
        kwargs["batch_key"] = "batch"
    elif case == "numeric batch":
        adata.obs["batch"] = np.arange(adata.n_obs) % 3
        kwargs["batch_key"] = "batch"
    elif case == "batch category with one cell":
        adata.obs.iloc[0, adata.obs.columns.get_loc("batch")] = "lonely"
        kwargs["batch_key"] = "batch"
    elif case == "n_latent larger than genes":
        adata = adata[:, :5].copy()
        adata = adata[np.asarray(adata.X.sum(1)).ravel() > 0].copy()
        kwargs["n_latent"] = 12
    elif case == "fewer cells than batch_size":
        kwargs["batch_size"] = 10_000
    elif case == "genes with no counts":
        X = adata.X.toarray()
        X[:, :10] = 0
        adata.X = sp.csr_matrix(X)
        adata = adata[np.asarray(adata.X.sum(1)).ravel() > 0].copy()
    elif case == "integer counts as float64 layer":
        adata.layers["counts"] = adata.X.astype(np.float64)
        adata.X = adata.X.log1p()
        kwargs["layer"] = "counts"
    model = sl.tl.autoencode(adata, return_model=True, **FAST, **kwargs)
    latent = adata.obsm["X_sclatent"]
    assert latent.shape == (adata.n_obs, kwargs.get("n_latent", N_LATENT))
    assert np.isfinite(latent).all()
    assert np.isfinite(adata.layers["sclatent_denoised"]).all()
    if "batch_key" in kwargs:
        assert len(model.setup.categories["batch"]) == adata.obs["batch"].nunique()


def test_clashing_key_added_warns_and_overwrites_consistently(tiny):
    sl.tl.autoencode(tiny, **FAST)
    tiny.obsm["X_other"] = np.zeros((tiny.n_obs, 2))
    with pytest.warns(UserWarning, match="overwriting"):
        sl.tl.autoencode(tiny, **{**FAST, "n_latent": 3})
    assert tiny.obsm["X_sclatent"].shape[1] == 3
    assert tiny.uns["sclatent"]["params"]["n_latent"] == 3
    assert "X_other" in tiny.obsm


# ----------------------------------------------------------------------------- clear errors
def _set_value(value):
    def corrupt(a):
        X = a.X.copy()
        X.data[0] = value
        a.X = X

    return corrupt


def _log_normalise(a):
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)


def _scale(a):
    _log_normalise(a)
    a.X = a.X.toarray()
    sc.pp.scale(a)


def _empty_cells(a):
    X = a.X.tolil()
    X[:2] = 0
    a.X = X.tocsr()


ERRORS = {
    "log-normalised counts": (_log_normalise, {}, ValueError, "non-integer values"),
    "scaled values": (_scale, {}, ValueError, "negative values|non-integer values"),
    "negative counts": (_set_value(-3), {}, ValueError, "negative values"),
    "NaN": (_set_value(np.nan), {}, ValueError, "NaN or infinite"),
    "inf": (_set_value(np.inf), {}, ValueError, "NaN or infinite"),
    "NaN, gaussian": (_set_value(np.nan), {"likelihood": "gaussian"}, ValueError, "NaN or infinite"),
    "empty cells": (_empty_cells, {}, ValueError, "2 cells have no counts"),
    "duplicate var_names": (
        lambda a: setattr(a, "var_names", ["g"] * a.n_vars),
        {},
        ValueError,
        "var_names_make_unique",
    ),
    # anndata ≥ 0.13 lists None (its name for X) among the layers; the message lists only named layers
    "missing layer": (lambda a: None, {"layer": "counts"}, KeyError, r"layer 'counts' not found .*\(available: \[\]\)"),
    "missing batch_key": (lambda a: None, {"batch_key": "donor"}, KeyError, "not found in adata.obs"),
    "NaN in batch": (
        lambda a: a.obs.__setitem__("batch", a.obs["batch"].where(np.arange(a.n_obs) > 2)),
        {"batch_key": "batch"},
        ValueError,
        "3 missing values",
    ),
    "NaN in continuous covariate": (
        lambda a: a.obs.__setitem__("pct", a.obs["pct"].where(np.arange(a.n_obs) > 0)),
        {"continuous_covariate_keys": ["pct"]},
        ValueError,
        "finite numbers",
    ),
    "text as continuous covariate": (
        lambda a: None,
        {"continuous_covariate_keys": ["batch"]},
        ValueError,
        "finite numbers",
    ),
    "same key twice": (
        lambda a: None,
        {"batch_key": "batch", "categorical_covariate_keys": ["batch"]},
        ValueError,
        "twice",
    ),
    "n_latent 0": (lambda a: None, {"n_latent": 0}, ValueError, "n_latent must be"),
    "n_layers 0": (lambda a: None, {"n_layers": 0}, ValueError, "n_layers must be"),
    "dropout 1": (lambda a: None, {"dropout_rate": 1.0}, ValueError, "dropout_rate"),
    "unknown likelihood": (lambda a: None, {"likelihood": "zip"}, ValueError, "Unknown likelihood"),
    "unknown transform_batch": (lambda a: None, {"batch_key": "batch", "transform_batch": "b7"}, ValueError, "b7"),
    "complex values": (lambda a: setattr(a, "X", a.X.toarray().astype(np.complex64)), {}, TypeError, "real numbers"),
}


@pytest.mark.filterwarnings("ignore::scipy.sparse.SparseEfficiencyWarning")
@pytest.mark.parametrize("case", ERRORS)
def test_bad_input_clear_error_before_training(tiny, case, monkeypatch):
    corrupt, kwargs, error, match = ERRORS[case]
    corrupt(tiny)
    before = snapshot(tiny)
    _no_training(monkeypatch)
    with pytest.raises(error, match=match) as raised:
        sl.tl.autoencode(tiny, **{**FAST, **kwargs})
    assert_names_fix(raised.value)
    assert_unchanged(tiny, before)


@pytest.mark.parametrize(
    ("shape", "match"),
    [((1, 50), "at least 16"), ((10, 50), "at least 16"), ((50, 0), "no genes")],
)
def test_too_small(tiny, shape, match):
    adata = tiny[: shape[0], : shape[1]].copy()
    before = snapshot(adata)
    with pytest.raises(ValueError, match=match) as raised:
        sl.tl.autoencode(adata, **FAST)
    assert_names_fix(raised.value)
    assert_unchanged(adata, before)


def test_bad_fit_options(tiny):
    before = snapshot(tiny)
    for kwargs, match in [
        ({"max_epochs": 0}, "max_epochs"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"batch_size": 1}, "batch_size"),
        ({"validation_fraction": 0.0}, "early_stopping needs held-out cells"),
    ]:
        with pytest.raises(ValueError, match=match):
            sl.tl.autoencode(tiny, **{**FAST, **kwargs})
    assert_unchanged(tiny, before)


# ----------------------------------------------------------------------------- new data
@pytest.fixture
def trained(tiny):
    model = sl.models.Autoencoder(tiny, batch_key="batch", n_hidden=16)
    model.fit(max_epochs=2, progress_bar=False)
    return model, tiny


def test_inference_genes_reordered_or_extra(trained):
    model, adata = trained
    extra = ad.AnnData(
        X=sp.random(adata.n_obs, 3, density=0.5, format="csr", random_state=0, dtype=np.float32).ceil(),
        obs=adata.obs[[]],
        var=pd.DataFrame(index=["x1", "x2", "x3"]),
    )
    wider = ad.concat([adata, extra], axis=1, merge="first")
    wider = wider[:, np.random.default_rng(0).permutation(wider.n_vars)].copy()
    np.testing.assert_allclose(model.get_latent(wider), model.get_latent(adata), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda a: a[:, 1:].copy(), ValueError, r"1 of the model's 100 genes are missing"),
        (lambda a: a.obs.__setitem__("batch", "b9") or a, ValueError, r"not trained on: \['b9'\]"),
        (lambda a: a.obs.drop(columns="batch", inplace=True) or a, KeyError, "no column 'batch'"),
        (lambda a: _set_value(np.nan)(a) or a, ValueError, "NaN"),
    ],
    ids=["missing gene", "unseen batch", "no batch column", "NaN"],
)
def test_inference_errors(trained, change, error, match):
    model, adata = trained
    new = change(adata.copy())
    before = snapshot(new)
    with pytest.raises(error, match=match) as raised:
        model.get_latent(new)
    assert_names_fix(raised.value)
    assert_unchanged(new, before)


# ----------------------------------------------------------------------------- other public functions
def test_other_tools_fail_early_with_the_step_to_run(tiny):
    before = snapshot(tiny)
    checks = [
        (lambda: sl.tl.leiden(tiny), KeyError, r"sl\.tl\.autoencode"),
        (lambda: sl.tl.umap(tiny), KeyError, r"sl\.tl\.autoencode"),
        (lambda: sl.tl.root_cell(tiny), KeyError, r"sl\.tl\.autoencode"),
        (lambda: sl.tl.root_cell(tiny, groupby="batch"), ValueError, "both `groupby` and `group`"),
        (lambda: sl.tl.root_cell(tiny, gene="NOTAGENE"), KeyError, "NOTAGENE"),
        (lambda: sl.tl.pseudotime(tiny), ValueError, r"sl\.tl\.root_cell"),
        (lambda: sl.tl.pseudotime(tiny, root=10**6), IndexError, "out of range"),
        (lambda: sl.tl.pseudotime(tiny, root="nocell"), KeyError, "nocell"),
        (lambda: sl.tl.paga(tiny, groups="clusters"), KeyError, r"sl\.tl\.leiden"),
        (lambda: sl.tl.gene_trends(tiny, [tiny.var_names[0]]), KeyError, r"sl\.tl\.pseudotime"),
        (lambda: sl.tl.latent_path(tiny, start=0, end=1), ValueError, "pass `model=`"),
        (lambda: sl.pl.history(tiny), KeyError, r"sl\.tl\.autoencode"),
        (lambda: sl.pl.gene_trends(tiny), KeyError, r"sl\.tl\.gene_trends"),
        (lambda: sl.pl.latent_path(tiny), ValueError, r"sl\.tl\.latent_path"),
    ]
    for call, error, match in checks:
        with pytest.raises(error, match=match) as raised:
            call()
        assert_names_fix(raised.value)
    assert_unchanged(tiny, before)


def test_gene_trends_bad_arguments(tiny):
    sl.tl.autoencode(tiny, **FAST)
    sl.tl.pseudotime(tiny, root=0)
    with pytest.raises(KeyError, match="NOTAGENE"):
        sl.tl.gene_trends(tiny, ["NOTAGENE"])
    with pytest.raises(ValueError, match=r"not in adata\.obs"):
        sl.tl.gene_trends(tiny, [tiny.var_names[0]], groupby="batch", lineages={"x": ["nope"]})
    with pytest.raises(ValueError, match="needs `groupby`"):
        sl.tl.gene_trends(tiny, [tiny.var_names[0]], lineages={"x": ["b1"]})


# ----------------------------------------------------------------------------- property-based
@st.composite
def count_matrices(draw):
    n_obs = draw(st.integers(16, 48))
    n_vars = draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    density = draw(st.floats(0.05, 1.0))
    X = rng.poisson(rng.gamma(0.5, 4.0, (n_obs, n_vars))) * (rng.random((n_obs, n_vars)) < density)
    X[:, 0] += 1  # no empty cells in the valid case
    fmt = draw(st.sampled_from(["csr", "csc", "dense"]))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int32, np.int64]))
    flaw = draw(st.sampled_from([None, None, "nan", "inf", "negative", "fraction", "empty cell"]))
    X = X.astype(np.float64)
    i, j = rng.integers(n_obs), rng.integers(n_vars)
    if flaw == "nan":
        X[i, j] = np.nan
    elif flaw == "inf":
        X[i, j] = np.inf
    elif flaw == "negative":
        X[i, j] = -1
    elif flaw == "fraction":
        X[i, j] = 0.5
    elif flaw == "empty cell":
        X[i] = 0
    if flaw in ("nan", "inf", "fraction"):
        dtype = np.float64
    X = X.astype(dtype)
    X = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "dense": np.asarray}[fmt](X)
    return ad.AnnData(X=X), flaw


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count_matrices())
def test_property_valid_or_clear_error(example):
    adata, flaw = example
    before = snapshot(adata)
    try:
        sl.tl.autoencode(adata, max_epochs=1, n_hidden=8, n_latent=3, progress_bar=False, validation_fraction=0.2)
    except (ValueError, TypeError, KeyError) as e:
        if flaw is None:
            pytest.fail(f"valid input refused: {e}")
        assert_unchanged(adata, before)
        return
    assert flaw is None, f"bad input ({flaw}) accepted"
    assert adata.obsm["X_sclatent"].shape == (adata.n_obs, 3)
    assert np.isfinite(adata.obsm["X_sclatent"]).all()
