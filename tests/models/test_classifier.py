"""The cell classifier on real data: conditions across donors, cell lines across plates, files, bad input."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

import sclatent as sl

from sclatent_test_helpers import assert_names_fix

DATA = Path(__file__).resolve().parents[1] / "data"


def _log_normalised(adata) -> np.ndarray:
    a = adata.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    return a.X.toarray()


@pytest.fixture(scope="module")
def kang_donors():
    kang = ad.read_h5ad(DATA / "kang2018_stim_subset.h5ad")
    donor = kang.obs["patient_id"].astype(str)
    return kang[donor == "101"].copy(), kang[donor == "107"].copy()


def test_stimulation_is_recognised_in_an_unseen_donor(kang_donors):
    train, held_out = kang_donors
    clf = sl.models.Classifier(train, "group_id").fit(progress_bar=False)
    truth = held_out.obs["group_id"].astype(str)
    ours = balanced_accuracy_score(truth, clf.predict(held_out).astype(str))
    # the baseline: logistic regression on 50 principal components of log-normalised counts
    pca = PCA(50, random_state=0).fit(_log_normalised(train))
    baseline = LogisticRegression(max_iter=2000).fit(pca.transform(_log_normalised(train)), train.obs["group_id"])
    theirs = balanced_accuracy_score(truth, baseline.predict(pca.transform(_log_normalised(held_out))).astype(str))
    assert ours >= 0.9  # measured 0.993
    assert ours >= theirs - 0.01  # baseline measured 0.995
    proba = clf.predict_proba(held_out)
    assert list(proba.columns) == ["ctrl", "stim"]
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert (proba.index == held_out.obs_names).all()


def test_cell_lines_with_whole_plates_held_out(cellbench_5cl):
    plates = cellbench_5cl.obs["batch"].astype(str).to_numpy()
    clf = sl.models.Classifier(cellbench_5cl, "cell_line_demuxlet").fit(
        validation_groups=plates, validation_fraction=0.2, progress_bar=False
    )
    held = clf.training_info["validation_groups"]
    assert set(plates[clf.validation_indices]) == set(held)
    assert not set(plates[clf.train_indices]) & set(held)  # no plate on both sides
    predicted = clf.predict().astype(str).to_numpy()
    truth = cellbench_5cl.obs["cell_line_demuxlet"].astype(str).to_numpy()
    assert (predicted[clf.validation_indices] == truth[clf.validation_indices]).mean() >= 0.95


def test_genes_by_name_and_files(kang_donors, tmp_path):
    train, held_out = kang_donors
    clf = sl.models.Classifier(train, "group_id").fit(max_epochs=5, progress_bar=False)
    shuffled = held_out[:, np.random.default_rng(0).permutation(held_out.n_vars)].copy()
    assert np.allclose(clf.predict_proba(shuffled), clf.predict_proba(held_out), atol=1e-6)
    clf.save(tmp_path / "clf")
    loaded = sl.models.Classifier.load(tmp_path / "clf")
    assert loaded.classes == clf.classes
    assert np.array_equal(loaded.predict_proba(held_out), clf.predict_proba(held_out))
    with pytest.raises(ValueError, match="holds a Classifier") as raised:
        sl.models.Autoencoder.load(tmp_path / "clf")
    assert_names_fix(raised.value)
    with pytest.raises(ValueError, match=r"missing from adata\.var_names") as raised:
        clf.predict(held_out[:, 10:].copy())
    assert_names_fix(raised.value)


def test_bad_input_fails_before_training(kang_donors):
    train, _ = kang_donors
    unlabelled = train.copy()
    unlabelled.obs["group_id"] = unlabelled.obs["group_id"].astype(object)
    unlabelled.obs.iloc[:2, unlabelled.obs.columns.get_loc("group_id")] = np.nan
    lonely = train.copy()
    lonely.obs["group_id"] = lonely.obs["group_id"].astype(str)
    lonely.obs.iloc[0, lonely.obs.columns.get_loc("group_id")] = "alone"
    single = train.copy()
    single.obs["group_id"] = "ctrl"
    cases = [
        (train, "no_such", KeyError, "has no column"),
        (unlabelled, "group_id", ValueError, "2 adata cells have no label"),
        (lonely, "group_id", ValueError, "single cell"),
        (single, "group_id", ValueError, "single class"),
    ]
    for adata, key, error, match in cases:
        with pytest.raises(error, match=match) as raised:
            sl.models.Classifier(adata, key)
        assert_names_fix(raised.value)
    clf = sl.models.Classifier(train, "group_id")
    with pytest.raises(ValueError, match="single group") as raised:
        clf.fit(validation_groups=np.repeat("d", train.n_obs))
    assert_names_fix(raised.value)
    assert not clf.is_trained


def test_counts_changed_in_place_after_the_classifier_read_them_are_refused(kang_donors):
    train = kang_donors[0].copy()
    clf = sl.models.Classifier(train, "group_id")  # holds train.X without copying it
    sc.pp.normalize_total(train)
    with pytest.raises(ValueError, match=r"has changed since, in place.*new Classifier.*layer='counts'") as raised:
        clf.fit(max_epochs=1, progress_bar=False)
    assert_names_fix(raised.value)
    assert not clf.is_trained
