from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

import sclatent as sl

from sclatent_test_helpers import other_batch_fraction


def _leiden(adata, resolution):
    sc.pp.neighbors(adata, use_rep="X_sclatent", n_neighbors=15, random_state=0)
    sc.tl.leiden(adata, resolution=resolution, flavor="igraph", n_iterations=2, random_state=0)
    return adata.obs["leiden"]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_cellbench_lines_separate_and_technologies_mix(cellbench_3cl, cellbench_3cl_trained, precision):
    if precision == "32-true":  # the defaults' training, which other tests share
        corrected, model = cellbench_3cl_trained[0].copy(), cellbench_3cl_trained[1]
    else:
        corrected = cellbench_3cl.copy()
        model = sl.tl.autoencode(
            corrected, batch_key="batch", precision=precision, progress_bar=False, return_model=True
        )
    ari = adjusted_rand_score(corrected.obs["cell_line_demuxlet"], _leiden(corrected, resolution=0.1))
    mixing = other_batch_fraction(corrected.obsm["X_sclatent"], corrected.obs["batch"])
    # on the decoder's axes the lines lie further apart than in the posterior means the latent is made from
    # (silhouette measured for seeds 0-2: 0.326-0.354 against 0.138-0.170, in both precisions)
    lines = corrected.obs["cell_line_demuxlet"]
    latent = corrected.obsm["X_sclatent"]
    posterior_mean = model.module.latent_to_mean(torch.from_numpy(latent)).numpy()
    separation, separation_mean = silhouette_score(latent, lines), silhouette_score(posterior_mean, lines)

    plain = cellbench_3cl.copy()
    sl.tl.autoencode(plain, precision=precision, progress_bar=False)
    mixing_plain = other_batch_fraction(plain.obsm["X_sclatent"], plain.obs["batch"])

    assert ari >= 0.95
    assert mixing >= 0.5, f"technologies mix at {mixing:.2f} of random"
    assert separation >= separation_mean + 0.1, (
        f"silhouette {separation:.3f}, of the posterior means {separation_mean:.3f}"
    )
    # the batch-covariate encoder is what removes the technology effect
    assert mixing_plain < 0.5 * mixing, f"without batch_key {mixing_plain:.2f}, with {mixing:.2f}"


# bf16-mixed is checked on CellBench above in the default suite; on PBMC it is marked slow
@pytest.mark.parametrize("precision", ["32-true", pytest.param("bf16-mixed", marks=pytest.mark.slow)])
def test_pbmc_clusters_match_cell_types(pbmc_hvg, pbmc_trained, precision):
    if precision == "32-true":  # the defaults' training, which other tests share
        adata = pbmc_trained[0].copy()
    else:
        adata = pbmc_hvg.copy()
        sl.tl.autoencode(adata, precision=precision, progress_bar=False)
    nmi = normalized_mutual_info_score(adata.obs["cell_type"], _leiden(adata, resolution=0.5))
    # measured with the defaults, seeds 0-2: 0.788, 0.803, 0.820 (float32; 0.791, 0.788, 0.791 with the posterior
    # means as the latent, rescale_latent=False); bf16-mixed with the posterior means: 0.791, 0.793, 0.775
    assert nmi >= 0.77
    assert adata.uns["sclatent"]["training"]["precision"] == precision
    info = adata.uns["sclatent"]["training"]
    assert info["n_epochs"] <= info["max_epochs"]
    assert 0 <= info["best_epoch"] < info["n_epochs"]


def test_outputs_and_user_data_untouched(pbmc_small):
    adata = pbmc_small
    X_before = adata.X.copy()
    counts_before = adata.layers["counts"].copy()
    obs_before = adata.obs.copy()
    layers_before = set(adata.layers)
    sl.tl.autoencode(adata, layer="counts", batch_key="donor_batch", max_epochs=3, progress_bar=False)

    assert adata.obsm["X_sclatent"].shape == (adata.n_obs, 20)  # the default n_latent
    assert adata.obsm["X_sclatent"].dtype == np.float32
    assert np.isfinite(adata.obsm["X_sclatent"]).all()
    denoised = adata.layers["sclatent_denoised"]
    assert denoised.shape == adata.shape
    # expected expression per 10,000 counts
    np.testing.assert_allclose(denoised.sum(1), 1e4, rtol=1e-3)
    uns = adata.uns["sclatent"]
    assert set(uns) == {"params", "history", "training", "versions"}
    assert uns["params"]["batch_key"] == "donor_batch"
    assert len(uns["history"]["train_loss"]) == uns["training"]["n_epochs"] == 3
    assert {"sclatent", "torch", "scanpy", "anndata"} <= set(uns["versions"])
    # nothing else changed, byte for byte
    assert (adata.X != X_before).nnz == 0
    assert np.array_equal(adata.X.data, X_before.data)
    assert np.array_equal(adata.X.indices, X_before.indices)
    assert (adata.layers["counts"] != counts_before).nnz == 0
    pd.testing.assert_frame_equal(adata.obs, obs_before)
    # the one layer sclatent adds (anndata 0.13 also lists None, its name for X, among the layers)
    assert set(adata.layers) - layers_before == {"sclatent_denoised"}
    assert layers_before <= set(adata.layers)


def test_results_survive_h5ad_round_trip(pbmc_small, tmp_path):
    sl.tl.autoencode(pbmc_small, batch_key="donor_batch", max_epochs=2, progress_bar=False)
    pbmc_small.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(back.obsm["X_sclatent"], pbmc_small.obsm["X_sclatent"])
    np.testing.assert_array_equal(back.layers["sclatent_denoised"], pbmc_small.layers["sclatent_denoised"])
    before, after = pbmc_small.uns["sclatent"], back.uns["sclatent"]
    assert set(after) == set(before)
    for part in ("params", "training", "versions"):
        assert set(after[part]) == set(before[part])
    np.testing.assert_array_equal(after["history"]["train_loss"], before["history"]["train_loss"])
    assert after["versions"]["torch"] == str(before["versions"]["torch"])


def test_copy_returns_new_object_and_leaves_input(pbmc_small):
    out = sl.tl.autoencode(pbmc_small, max_epochs=2, copy=True, progress_bar=False)
    assert out is not pbmc_small
    assert "X_sclatent" in out.obsm
    assert "X_sclatent" not in pbmc_small.obsm
    assert "sclatent" not in pbmc_small.uns


@pytest.mark.parametrize("likelihood", ["zinb", "nb", "poisson", "gaussian"])
def test_every_likelihood_trains_and_writes_the_same_keys(pbmc_small, likelihood):
    adata = pbmc_small
    if likelihood == "gaussian":
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
    layers_before = set(adata.layers)
    model = sl.tl.autoencode(
        adata, likelihood=likelihood, max_epochs=5, key_added="ae", progress_bar=False, return_model=True
    )
    assert set(adata.obsm) == {"X_ae"}
    assert set(adata.layers) - layers_before == {"ae_denoised"}
    assert adata.uns["ae"]["params"]["likelihood"] == likelihood
    assert np.isfinite(adata.obsm["X_ae"]).all()
    assert np.isfinite(adata.layers["ae_denoised"]).all()
    history = model.history
    assert len(history) == 5
    assert np.isfinite(history.to_numpy()).all()
    # it learned something: the loss went down
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]


def test_zinb_beats_poisson_on_held_out_cells(pbmc_hvg):
    scores = {}
    for likelihood in ("zinb", "poisson"):
        model = sl.tl.autoencode(
            pbmc_hvg.copy(), likelihood=likelihood, max_epochs=60, progress_bar=False, return_model=True, denoise=False
        )
        scores[likelihood] = model.elbo(indices=model.validation_indices).mean()
    # same random_state, so the same held-out cells
    assert scores["zinb"] > scores["poisson"], scores


def test_same_seed_same_latent(pbmc_small):
    a, b, c = (pbmc_small.copy() for _ in range(3))
    for adata, seed in ((a, 1), (b, 1), (c, 2)):
        sl.tl.autoencode(adata, max_epochs=3, random_state=seed, progress_bar=False, denoise=False)
    np.testing.assert_array_equal(a.obsm["X_sclatent"], b.obsm["X_sclatent"])
    assert np.abs(a.obsm["X_sclatent"] - c.obsm["X_sclatent"]).max() > 0.05


def test_deterministic_autoencoder_and_covariates(pbmc_small):
    sl.tl.autoencode(
        pbmc_small,
        variational=False,
        categorical_covariate_keys=["donor_batch"],
        continuous_covariate_keys=["pct_mito"],
        n_latent=4,
        n_layers=2,
        max_epochs=3,
        progress_bar=False,
    )
    assert pbmc_small.obsm["X_sclatent"].shape == (pbmc_small.n_obs, 4)
    assert pbmc_small.uns["sclatent"]["params"]["continuous_covariate_keys"] == ["pct_mito"]


def test_transform_batch(pbmc_small):
    model = sl.tl.autoencode(pbmc_small, batch_key="donor_batch", max_epochs=3, progress_bar=False, return_model=True)
    as_a = model.get_denoised(transform_batch="a")
    as_b = model.get_denoised(transform_batch="b")
    own = pbmc_small.layers["sclatent_denoised"]
    is_a = (pbmc_small.obs["donor_batch"] == "a").to_numpy()
    np.testing.assert_allclose(as_a[is_a], own[is_a], rtol=1e-5, atol=1e-6)
    assert not np.allclose(as_a[~is_a], as_b[~is_a])
    with pytest.raises(ValueError, match="not a category"):
        model.get_denoised(transform_batch="zzz")


def test_genes_zero_everywhere_are_handled(pbmc_small):
    zeros = sc.AnnData(
        X=sp.csr_matrix((pbmc_small.n_obs, 20), dtype=np.float32),
        obs=pbmc_small.obs[[]],
        var=pd.DataFrame(index=[f"empty{i}" for i in range(20)]),
    )
    adata = sc.concat([pbmc_small, zeros], axis=1, merge="first")
    sl.tl.autoencode(adata, max_epochs=5, progress_bar=False)
    assert np.isfinite(adata.obsm["X_sclatent"]).all()
    denoised = adata.layers["sclatent_denoised"]
    # the model learns that these genes are not expressed
    assert denoised[:, -20:].mean() < denoised[:, :-20].mean()


def test_overwriting_results_warns(pbmc_small):
    sl.tl.autoencode(pbmc_small, max_epochs=1, progress_bar=False)
    with pytest.warns(UserWarning, match="overwriting"):
        sl.tl.autoencode(pbmc_small, max_epochs=1, progress_bar=False)


def test_validation_holds_out_whole_donors():
    """Early stopping on donors the model has not seen: no donor is both trained on and held out."""
    from pathlib import Path

    kang = ad.read_h5ad(Path(__file__).resolve().parents[1] / "data" / "kang2018_stim_subset.h5ad")
    donors = kang.obs["patient_id"].astype(str).to_numpy()
    model = sl.tl.autoencode(
        kang,
        categorical_covariate_keys=["group_id"],
        validation_groups_key="patient_id",
        max_epochs=30,
        progress_bar=False,
        denoise=False,
        return_model=True,
    )
    held_out = kang.uns["sclatent"]["training"]["validation_groups"]
    assert len(held_out) == 1
    assert set(donors[model.validation_indices]) == set(held_out)
    assert not set(donors[model.train_indices]) & set(held_out)
    assert len(model.train_indices) + len(model.validation_indices) == kang.n_obs
    # the loss on an unseen donor is higher than on the cells trained on (it measures generalisation)
    elbo = model.elbo()
    assert elbo[model.validation_indices].mean() < elbo[model.train_indices].mean()


def test_holding_out_a_whole_batch_warns_that_it_is_not_corrected(pbmc_small):
    with pytest.warns(UserWarning, match=r"'donor_batch'.* categories \['(a|b)'\] have no training cells"):
        model = sl.tl.autoencode(
            pbmc_small,
            batch_key="donor_batch",
            validation_groups_key="donor_batch",
            max_epochs=1,
            progress_bar=False,
            return_model=True,
        )
    assert len(set(pbmc_small.obs["donor_batch"].iloc[model.train_indices])) == 1
    assert model.trained_categories["donor_batch"] == sorted(
        set(pbmc_small.obs["donor_batch"].iloc[model.train_indices])
    )


def test_a_category_trained_before_is_not_warned_about_when_held_out_later(pbmc_small, tmp_path):
    import warnings

    model = sl.models.Autoencoder(pbmc_small, batch_key="donor_batch").fit(max_epochs=1, progress_bar=False)
    assert model.trained_categories == {"donor_batch": ["a", "b"]}
    model.save(tmp_path / "m")
    groups = pbmc_small.obs["donor_batch"].to_numpy()
    for again in (model, sl.models.Autoencoder.load(tmp_path / "m", pbmc_small)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            again.fit(max_epochs=1, validation_groups=groups, progress_bar=False)  # one donor held out whole
        assert not [w for w in caught if "no training cells" in str(w.message)]
        assert again.trained_categories == {"donor_batch": ["a", "b"]}


def test_validation_groups_bad_input_fails_before_training(pbmc_small):
    from sclatent_test_helpers import assert_names_fix

    one_group = pbmc_small.copy()
    one_group.obs["donor"] = "d1"
    missing = pbmc_small.copy()
    missing.obs["donor"] = pd.Series(["d1", "d2"] * (missing.n_obs // 2), index=missing.obs_names, dtype=object)
    missing.obs.iloc[:3, missing.obs.columns.get_loc("donor")] = np.nan
    cases = [
        (pbmc_small, {"validation_groups_key": "no_such"}, KeyError, "not a column"),
        (one_group, {"validation_groups_key": "donor"}, ValueError, "single group"),
        (missing, {"validation_groups_key": "donor"}, ValueError, "3 missing labels"),
        (
            pbmc_small,
            {"validation_groups_key": "donor_batch", "validation_fraction": 0, "early_stopping": False},
            ValueError,
            "validation_fraction > 0",
        ),
    ]
    for adata, kwargs, error, match in cases:
        with pytest.raises(error, match=match) as raised:
            sl.tl.autoencode(adata, max_epochs=2, progress_bar=False, **kwargs)
        assert_names_fix(raised.value)
        assert "sclatent" not in adata.uns
