"""Mapping new data onto a trained model (architecture surgery), and label transfer through it, on real data."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch
from benchmarks.mapping import REFERENCE, query_mixing

import sclatent as sl

from sclatent_test_helpers import assert_names_fix

DATA = Path(__file__).resolve().parents[1] / "data"


def _split(adata, batch_key: str, reference_batches: list[str]):
    adata = adata.copy()
    adata.obs[batch_key] = adata.obs[batch_key].astype(str)
    is_ref = adata.obs[batch_key].isin(reference_batches).to_numpy()
    return adata[is_ref].copy(), adata[~is_ref].copy()


def _train(reference, batch_key: str, **kwargs):
    return sl.tl.autoencode(
        reference, batch_key=batch_key, **REFERENCE, progress_bar=False, denoise=False, return_model=True, **kwargs
    )


def _accuracy(query, reference, label: str) -> float:
    sl.tl.transfer_labels(query, reference, label, key_added="predicted")
    return float((query.obs["predicted"].astype(str) == query.obs[label].astype(str)).mean())


@pytest.fixture(scope="module")
def cellbench_mapped(cellbench_3cl):
    """Reference CEL-seq2, query Drop-seq mapped onto it."""
    reference, query = _split(cellbench_3cl, "batch", ["CEL-seq2"])
    model = _train(reference, "batch")
    mapped = sl.tl.map_query(query, model, progress_bar=False, return_model=True)
    return reference, query, model, mapped


def test_cell_lines_transfer_from_one_technology_to_another(cellbench_mapped):
    reference, query, model, mapped = cellbench_mapped
    assert mapped.setup.categories["batch"] == ["CEL-seq2", "Drop-seq"]
    assert model.setup.categories["batch"] == ["CEL-seq2"]  # the reference model is left as it was
    assert _accuracy(query, reference, "cell_line_demuxlet") >= 0.95  # measured 1.0
    # the query mixes with the reference: at least half of what random mixing gives (measured 0.62)
    assert query_mixing(reference.obsm["X_sclatent"], query.obsm["X_sclatent"]) >= 0.5
    assert query.uns["sclatent"]["training"]["map_query"]["new_categories"] == {"batch": ["Drop-seq"]}


def test_the_reference_latent_does_not_move(cellbench_mapped):
    reference, _, model, mapped = cellbench_mapped
    assert np.abs(mapped.get_latent(reference) - reference.obsm["X_sclatent"]).max() < 1e-5
    # every weight and statistic the reference cells use is bit for bit the reference's
    before, after = model.module.state_dict(), mapped.module.state_dict()
    assert before.keys() == after.keys()
    for name, value in before.items():
        new = after[name]
        if new.shape != value.shape:  # a covariate weight: the known columns are kept, one column was added
            n_prev = value.shape[1] - 1
            assert torch.equal(new[:, : n_prev + 1], value), name
            assert not torch.equal(new[:, n_prev + 1], value[:, n_prev]), f"{name}: the new batch was not trained"
        else:
            assert torch.equal(new, value), name


def donor_halves(adata):
    """The cells of donor batch "a" as the reference, those of "b" as the query."""
    return adata[adata.obs["donor_batch"] == "a"].copy(), adata[adata.obs["donor_batch"] == "b"].copy()


def test_batch_norm_statistics_and_weight_decay_leave_the_reference_alone(pbmc_small):
    """With batch norm (the default) the running statistics stay; a weight decay would have moved frozen weights."""
    reference, query = donor_halves(pbmc_small)
    model = sl.tl.autoencode(
        reference,
        batch_key="donor_batch",
        max_epochs=5,
        kl_weight=0.5,
        progress_bar=False,
        denoise=False,
        return_model=True,
    )
    assert model.config.norm == "batch"
    with pytest.warns(UserWarning, match="norm=.layer."):
        mapped = model.map_query(query, max_epochs=5, progress_bar=False, early_stopping=False)
    state = mapped.module.state_dict()
    running = [k for k in state if "running_" in k or "num_batches_tracked" in k]
    assert running
    for key in running:
        assert torch.equal(state[key], model.module.state_dict()[key]), key
    assert np.abs(mapped.get_latent(reference) - model.get_latent(reference)).max() < 1e-5
    assert mapped.training_info["weight_decay"] == 0.0
    assert mapped.training_info["kl_weight"] == 0.5  # the query trains on the reference's objective
    assert all(p.requires_grad for p in mapped.module.parameters())  # the freezing ends with the mapping


def test_the_query_trains_in_the_precision_asked_for(pbmc_small):
    reference, query = donor_halves(pbmc_small)
    model = sl.models.Autoencoder(reference, batch_key="donor_batch", norm="layer").fit(
        max_epochs=2, progress_bar=False
    )
    losses = {}
    for precision in (None, "bf16-mixed"):
        _, mapped = sl.tl.map_query(
            query,
            model,
            max_epochs=2,
            early_stopping=False,
            precision=precision,
            progress_bar=False,
            copy=True,
            return_model=True,
        )
        losses[precision] = mapped.history["validation_loss"].iloc[-1]
        assert mapped.training_info["precision"] == (
            "32-true" if precision is None else precision
        )  # small query: float32
    assert losses[None] != losses["bf16-mixed"]


def test_plates_transfer_and_a_mapped_model_saves_loads_and_maps_again(cellbench_5cl, tmp_path):
    reference, query = _split(cellbench_5cl, "batch", ["p1", "p2"])
    model = _train(reference, "batch")
    sl.tl.map_query(query, model, progress_bar=False)
    assert _accuracy(query, reference, "cell_line_demuxlet") >= 0.95  # measured 1.0

    first, rest = _split(cellbench_5cl, "batch", ["p1"])
    second, third = _split(rest, "batch", ["p2"])
    model = _train(first, "batch")
    mapped = model.map_query(second, progress_bar=False)
    mapped.save(tmp_path / "mapped")
    loaded = sl.models.Autoencoder.load(tmp_path / "mapped")
    assert np.array_equal(loaded.get_latent(second), mapped.get_latent(second))
    again = loaded.map_query(third, progress_bar=False)
    assert again.setup.categories["batch"] == ["p1", "p2", "p3"]
    for cells in (first, second):  # both earlier batches are encoded as before
        assert np.abs(again.get_latent(cells) - mapped.get_latent(cells)).max() < 1e-5
    third.obsm["X_sclatent"] = again.get_latent()
    assert _accuracy(third, first, "cell_line_demuxlet") >= 0.95


def test_cell_types_transfer_between_donors():
    kang = ad.read_h5ad(DATA / "kang2018_stim_subset.h5ad")
    reference, query = _split(kang, "patient_id", ["101"])
    model = _train(reference, "patient_id", categorical_covariate_keys=["group_id"])
    sl.tl.map_query(query, model, progress_bar=False)
    assert _accuracy(query, reference, "cluster_id") >= 0.85


def test_a_cell_type_missing_from_the_reference_comes_out_unknown():
    kang = ad.read_h5ad(DATA / "kang2018_stim_subset.h5ad")
    reference, query = _split(kang, "patient_id", ["101"])
    reference = reference[reference.obs["cluster_id"].astype(str) != "B cells"].copy()
    model = _train(reference, "patient_id", categorical_covariate_keys=["group_id"])
    sl.tl.map_query(query, model, progress_bar=False)
    sl.tl.transfer_labels(query, reference, "cluster_id", key_added="predicted", novelty_quantile=0.05)
    predicted = query.obs["predicted"].astype(str).to_numpy()
    truth = query.obs["cluster_id"].astype(str).to_numpy()
    novel = truth == "B cells"
    # measured: 63% of the query's B cells Unknown (1% without the expression match), 2.0% of the others
    assert (predicted[novel] == "Unknown").mean() >= 0.5
    assert (predicted[~novel] == "Unknown").mean() <= 0.1
    assert (predicted[~novel] == truth[~novel]).mean() >= 0.8  # measured 0.859
    # the expression match alone: B cells match their reference neighbours worse than other cells do
    # (median percentile among reference cells: measured 0.04 against 0.74)
    match = query.obs["predicted_expression_match"].to_numpy()
    assert np.median(match[novel]) < np.median(match[~novel])


def test_genes_are_matched_by_name_and_missing_ones_filled_with_zeros(cellbench_mapped):
    _, query, model, _ = cellbench_mapped
    rng = np.random.default_rng(0)
    shuffled = query[:, rng.permutation(query.n_vars)].copy()
    same = model.map_query(shuffled, progress_bar=False, max_epochs=20, early_stopping=False)
    ordered = model.map_query(query, progress_bar=False, max_epochs=20, early_stopping=False)
    assert np.allclose(same.get_latent(), ordered.get_latent(), atol=1e-5)

    fewer = query[:, 100:].copy()  # 100 of the model's 2,000 genes are not measured
    with pytest.warns(UserWarning, match="lacks 100 of the model's 2000 genes"):
        mapped = model.map_query(fewer, progress_bar=False, max_epochs=20, early_stopping=False)
    assert mapped.training_info["map_query"]["n_genes_filled_with_zeros"] == 100
    assert mapped.get_latent().shape == (query.n_obs, model.config.n_latent)

    too_few = query[:, :900].copy()
    with pytest.raises(ValueError, match="900 of the model's 2000 genes") as raised:
        model.map_query(too_few, progress_bar=False)
    assert_names_fix(raised.value)
    assert mapped.setup.var_names == model.setup.var_names


def test_query_batches_named_like_reference_batches_are_those_batches(cellbench_mapped):
    reference, _, model, _ = cellbench_mapped
    again = reference[:100].copy()
    with pytest.warns(UserWarning, match=r"\['CEL-seq2'\] are named like reference batches"):
        mapped = model.map_query(again, progress_bar=False)
    assert mapped.setup.categories == model.setup.categories
    assert "n_epochs" not in mapped.training_info  # nothing new, nothing trained
    assert len(mapped.validation_indices) == 0  # no indices of the reference's cells left behind
    assert np.array_equal(mapped.get_latent(), model.get_latent(again))


def test_known_batch_cells_held_out_in_a_query_are_not_warned_about(cellbench_mapped):
    import warnings

    reference, query, model, _ = cellbench_mapped
    mixed = ad.concat([reference[:1], query])  # one cell of the reference's batch, held out for validation
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mapped = model.map_query(mixed, validation_fraction=0.9, max_epochs=2, progress_bar=False)
    said = [str(w.message) for w in caught]
    assert any("named like reference batches" in m for m in said)
    assert not [m for m in said if "no training cells" in m]  # 'CEL-seq2' was trained with the reference
    assert 0 in mapped.validation_indices  # the case at hand: no training cell of 'CEL-seq2'
    assert mapped.trained_categories == {"batch": ["CEL-seq2", "Drop-seq"]}
    assert model.trained_categories == {"batch": ["CEL-seq2"]}  # the reference model is left as it was


def test_bad_input_fails_before_any_training(cellbench_mapped, pbmc_small):
    reference, query, model, _ = cellbench_mapped
    renamed = query.copy()
    renamed.var_names = [f"other_{g}" for g in renamed.var_names]
    no_batch = sl.tl.autoencode(pbmc_small, max_epochs=2, progress_bar=False, denoise=False, return_model=True)
    missing_batch = query.copy()
    missing_batch.obs["batch"] = missing_batch.obs["batch"].astype(object)
    missing_batch.obs.iloc[:4, missing_batch.obs.columns.get_loc("batch")] = np.nan
    untrained = sl.models.Autoencoder(reference, batch_key="batch")
    cases = [
        (model, renamed, ValueError, "0 of the model's 2000 genes"),
        (no_batch, pbmc_small, ValueError, "get_latent"),
        (model, missing_batch, ValueError, "4 missing values"),
        (untrained, query, ValueError, "not trained"),
    ]
    for m, q, error, match in cases:
        with pytest.raises(error, match=match) as raised:
            m.map_query(q, progress_bar=False)
        assert_names_fix(raised.value)
    with pytest.raises(ValueError, match="min_gene_overlap"):
        model.map_query(query, min_gene_overlap=0)


def test_new_categories_of_every_covariate_with_continuous_ones(pbmc_small):
    """The covariate columns of several keys and a continuous covariate are kept in their places."""
    adata = pbmc_small.copy()
    adata.obs["chemistry"] = np.where(np.arange(adata.n_obs) % 3 == 0, "v2", "v3")
    is_ref = (adata.obs["donor_batch"] == "a").to_numpy() & (adata.obs["chemistry"] == "v3").to_numpy()
    reference, query = adata[is_ref].copy(), adata[~is_ref].copy()
    query.obs["donor_batch"] = query.obs["donor_batch"].astype(str).replace({"a": "c"})
    model = sl.models.Autoencoder(
        reference,
        batch_key="donor_batch",
        categorical_covariate_keys=["chemistry"],
        continuous_covariate_keys=["pct_mito"],
        norm="layer",
    ).fit(max_epochs=5, progress_bar=False)
    mapped = model.map_query(query, max_epochs=5, progress_bar=False)
    assert mapped.setup.categories == {"donor_batch": ["a", "b", "c"], "chemistry": ["v3", "v2"]}
    assert mapped.config.n_categories == [3, 2]
    assert np.abs(mapped.get_latent(reference) - model.get_latent(reference)).max() < 1e-5
    # decoding the reference is unchanged too: every known column sits where it was
    assert np.allclose(mapped.get_denoised(reference), model.get_denoised(reference), rtol=1e-5, atol=1e-6)
    assert mapped.get_latent(query).shape == (query.n_obs, model.config.n_latent)
