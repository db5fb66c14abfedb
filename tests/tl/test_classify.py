"""Cross-validated classification with groups kept apart, an external hold-out and the baseline, on real data."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest

import sclatent as sl

from sclatent_test_helpers import assert_names_fix

matplotlib.use("Agg")
DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def kang_classified():
    kang = ad.read_h5ad(DATA / "kang2018_stim_subset.h5ad")
    model = sl.tl.classify(kang, "group_id", holdout={"patient_id": ["107"]}, return_model=True)
    return kang, model


def test_stimulation_in_a_held_out_donor_matches_the_baseline(kang_classified, tmp_path):
    kang, model = kang_classified
    res = kang.uns["sclatent_classify"]
    held = res["holdout"].pivot(index="metric", columns="method", values="value")
    # measured: balanced accuracy 0.993 (baseline 0.992), AUROC 1.000, calibration error 0.006
    assert held.loc["balanced_accuracy", "sclatent"] >= 0.9
    assert held.loc["balanced_accuracy", "sclatent"] >= held.loc["balanced_accuracy", "baseline"] - 0.01
    assert held.loc["auroc", "sclatent"] >= 0.95
    assert held.loc["ece", "sclatent"] < 0.05
    folds = res["folds"]
    assert set(folds["fold"]) == set(range(5))
    assert set(folds["metric"]) == {"accuracy", "balanced_accuracy", "macro_f1", "auroc", "ece"}
    # the donor held out is never in a fold; every other cell is tested once, out of fold
    donor = kang.obs["patient_id"].astype(str).to_numpy()
    assert (res["test_fold"][donor == "107"] == -1).all()
    assert (res["test_fold"][donor == "101"] >= 0).all()
    proba = kang.obsm["sclatent_classify_proba"]
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-4)
    assert list(kang.obs["sclatent_classify"].cat.categories) == ["ctrl", "stim"]
    assert res["holdout_confusion_matrix"].sum() == (donor == "107").sum()
    assert model.training_info["n_train_cells"] + model.training_info["n_validation_cells"] == (donor == "101").sum()
    fig = sl.pl.classify(kang, show=False)
    assert len(fig.axes) == 2
    kang.write_h5ad(tmp_path / "classified.h5ad")  # everything written can be stored
    back = ad.read_h5ad(tmp_path / "classified.h5ad")
    assert np.array_equal(back.uns["sclatent_classify"]["test_fold"], res["test_fold"])


def test_cell_lines_with_plates_as_groups(cellbench_5cl):
    adata = cellbench_5cl.copy()
    sl.tl.classify(adata, "cell_line_demuxlet", groups_key="batch", n_splits=3, baseline=False)
    res = adata.uns["sclatent_classify"]
    plates = adata.obs["batch"].astype(str).to_numpy()
    for plate in set(plates):  # each plate is tested in one fold, so it is never on both sides
        assert len(set(res["test_fold"][plates == plate])) == 1
    accuracy = res["folds"].query("metric == 'accuracy'")["value"]
    assert (accuracy >= 0.95).all()  # measured 1.0 in every fold
    assert set(res["folds"]["method"]) == {"sclatent"}
    fig = sl.pl.classify(adata, show=False)
    assert fig is not None


def test_bad_input_fails_before_training(kang_classified):
    kang, _ = kang_classified
    unlabelled = kang.copy()
    unlabelled.obs["group_id"] = unlabelled.obs["group_id"].astype(object)
    unlabelled.obs.iloc[:2, unlabelled.obs.columns.get_loc("group_id")] = np.nan
    lonely = kang.copy()
    lonely.obs["group_id"] = lonely.obs["group_id"].astype(str)
    lonely.obs.iloc[0, lonely.obs.columns.get_loc("group_id")] = "alone"
    cases = [
        (unlabelled, {}, ValueError, "2 adata cells have no label"),
        (lonely, {}, ValueError, "fewer training cells than n_splits"),
        (kang, {"groups_key": "patient_id"}, ValueError, "2 groups outside the holdout, fewer than n_splits=5"),
        (kang, {"holdout": {"group_id": ["stim"]}}, ValueError, "removes every cell of the classes"),
        (kang, {"holdout": {"no_such": ["x"]}}, KeyError, "not a column"),
        (kang, {"holdout": {"patient_id": ["999"]}}, ValueError, "not in adata.obs"),
        (kang, {"n_splits": 1}, ValueError, "n_splits"),
    ]
    for adata, kwargs, error, match in cases:
        before = adata.obs.copy()
        with pytest.raises(error, match=match) as raised:
            sl.tl.classify(adata, "group_id", key_added="bad", **kwargs)
        assert_names_fix(raised.value)
        assert "bad" not in adata.uns
        pd.testing.assert_frame_equal(adata.obs, before)


def test_a_class_in_one_group_only_fails_before_training(cellbench_5cl):
    adata = cellbench_5cl.copy()
    labels = adata.obs["cell_line_demuxlet"].astype(str).to_numpy()
    plates = adata.obs["batch"].astype(str).to_numpy()
    labels[(plates == "p1") & (labels == labels[0])] = "only on p1"
    adata.obs["line"] = labels
    with pytest.raises(ValueError, match="fewer than 2 cells of the classes") as raised:
        sl.tl.classify(adata, "line", groups_key="batch", n_splits=3)
    assert_names_fix(raised.value)
    assert "sclatent_classify" not in adata.uns


@pytest.fixture(scope="module")
def pbmc_from_latent(pbmc_trained):
    adata, autoencoder = pbmc_trained[0].copy(), pbmc_trained[1]
    before = {k: v.clone() for k, v in autoencoder.module.state_dict().items()}
    model = sl.tl.classify(
        adata, "cell_type", use_rep="X_sclatent", autoencoder=autoencoder, n_splits=3, return_model=True
    )
    return adata, autoencoder, before, model


def test_cell_types_from_the_latent_with_attributions_through_the_encoder(pbmc_from_latent, tmp_path):
    from scipy.stats import hypergeom

    pytest.importorskip("captum")
    import scanpy as sc

    adata, autoencoder, before, model = pbmc_from_latent
    res = adata.uns["sclatent_classify"]
    mean = res["folds"].pivot_table(index="metric", columns="method", values="value")
    # measured: balanced accuracy 0.909 from the latent against 0.883 for the baseline on counts
    assert mean.loc["balanced_accuracy", "sclatent"] >= 0.85
    assert mean.loc["balanced_accuracy", "sclatent"] >= mean.loc["balanced_accuracy", "baseline"] - 0.02
    assert res["params"]["use_rep"] == "X_sclatent"
    assert res["params"]["autoencoder"] is True
    # the classifier reads the latent through a frozen copy of the encoder: the autoencoder is unchanged ...
    for k, v in autoencoder.module.state_dict().items():
        assert torch_equal(v, before[k]), k
    # ... and so is the classifier's copy after training
    for k, v in model.module.encoder.state_dict().items():
        assert torch_equal(v, before[k]), k
    assert "from a latent of 20" in repr(model)
    # ... and its hidden layers read the latent the autoencoder wrote (on the decoder's axes)
    import torch

    seen = []
    handle = model.module.body.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    batch = autoencoder._inputs(None)[np.arange(64)]
    with torch.no_grad():
        model.module.logits(batch["x"], batch["library"], model.module.covariates(batch))
    handle.remove()
    np.testing.assert_allclose(seen[0].numpy(), adata.obsm["X_sclatent"][:64], rtol=1e-4, atol=1e-4)

    # attributions run through the encoder to the genes
    sl.tl.attribute(adata, model, groupby="cell_type")
    att = adata.uns["sclatent_attribute"]["results"]
    assert len(att) == len(model.classes) * adata.n_vars
    assert (adata.uns["sclatent_attribute"]["convergence"]["relative_delta"] < 0.05).all()  # measured ≤ 0.008
    rank = att.set_index(["target", "gene"])["rank"]
    assert rank["B cells", "CD79A"] <= 20  # measured 7
    assert rank["CD14+ Monocytes", "LYZ"] <= 20  # 4
    assert min(rank["NK cells", "NKG7"], rank["NK cells", "GNLY"]) <= 20  # 1, 2
    assert rank["Megakaryocytes", "PPBP"] <= 20  # 2
    wilcoxon = adata.copy()
    sc.pp.normalize_total(wilcoxon, target_sum=1e4)
    sc.pp.log1p(wilcoxon)
    sc.tl.rank_genes_groups(wilcoxon, "cell_type", method="wilcoxon", n_genes=100)
    overlaps = [
        len(
            set(att.query("target == @ct and rank <= 50")["gene"]) & set(wilcoxon.uns["rank_genes_groups"]["names"][ct])
        )
        for ct in model.classes
    ]
    # measured 28 to 49 of 50 in all 8 types
    assert sum(hypergeom.sf(k - 1, adata.n_vars, 100, 50) < 1e-3 for k in overlaps) >= 6

    # saved and loaded, it predicts new data from their counts alone, as before
    model.save(tmp_path / "clf")
    back = sl.models.Classifier.load(tmp_path / "clf")
    counts = ad.AnnData(adata.X[:200].copy(), var=adata.var[[]])
    np.testing.assert_allclose(back.predict_proba(counts).to_numpy(), model.predict_proba(counts).to_numpy(), atol=1e-6)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_cell_lines_from_a_latent_with_plates_as_covariate(cellbench_5cl):
    adata = cellbench_5cl.copy()
    autoencoder = sl.tl.autoencode(adata, batch_key="batch", progress_bar=False, denoise=False, return_model=True)
    model = sl.tl.classify(
        adata,
        "cell_line_demuxlet",
        use_rep="X_sclatent",
        autoencoder=autoencoder,
        groups_key="batch",
        n_splits=3,
        baseline=False,
        return_model=True,
    )
    accuracy = adata.uns["sclatent_classify"]["folds"].query("metric == 'accuracy'")["value"]
    assert (accuracy >= 0.95).all()
    # a plate the autoencoder never saw cannot be encoded: the error says how to map it first
    other = adata[:50].copy()
    other.obs["batch"] = "new plate"
    with pytest.raises(ValueError, match="new plate") as raised:
        model.predict(other)
    assert_names_fix(raised.value)


def test_classifying_from_a_latent_checks_its_input(pbmc_from_latent):
    adata, autoencoder, _, _ = pbmc_from_latent
    shuffled = adata.copy()
    shuffled.obsm["X_sclatent"] = shuffled.obsm["X_sclatent"][::-1].copy()
    cases = [
        (adata, {"use_rep": "X_sclatent"}, ValueError, "needs the autoencoder"),
        (adata, {"use_rep": "X_nothing", "autoencoder": autoencoder}, KeyError, "not in adata.obsm"),
        (shuffled, {"use_rep": "X_sclatent", "autoencoder": autoencoder}, ValueError, "not this autoencoder's latent"),
        (adata, {"autoencoder": autoencoder, "layer": "counts"}, ValueError, "the autoencoder reads the counts"),
        (adata, {"autoencoder": "a model"}, TypeError, "must be a trained"),
    ]
    for data, kwargs, error, match in cases:
        with pytest.raises(error, match=match) as raised:
            sl.tl.classify(data, "cell_type", key_added="bad", **kwargs)
        assert_names_fix(raised.value)
        assert "bad" not in data.uns
