"""Label transfer by weighted nearest neighbours in a shared latent space, on real data."""

from __future__ import annotations

import numpy as np
import pytest

import sclatent as sl

from sclatent_test_helpers import assert_names_fix


@pytest.fixture(scope="module")
def cellbench_joint(cellbench_3cl_trained):
    """CellBench 3 lines with a latent trained on both technologies (technology as batch)."""
    return cellbench_3cl_trained[0].copy()


def test_cell_lines_transfer_across_technologies(cellbench_joint):
    adata = cellbench_joint
    technologies = adata.obs["batch"].unique()
    reference = adata[adata.obs["batch"] == technologies[0]].copy()
    query = adata[adata.obs["batch"] == technologies[1]].copy()
    sl.tl.transfer_labels(query, reference, "cell_line_demuxlet", novelty_quantile=0.05)
    predicted = query.obs["cell_line_demuxlet_transferred"]
    accuracy = (predicted.astype(str) == query.obs["cell_line_demuxlet"].astype(str)).mean()
    assert accuracy >= 0.95, accuracy
    uncertainty = query.obs["cell_line_demuxlet_transferred_uncertainty"]
    assert uncertainty.between(0, 1).all()
    match = query.obs["cell_line_demuxlet_transferred_expression_match"]
    assert match.between(0, 1).all()
    assert query.uns["cell_line_demuxlet_transferred"]["transfer_labels"]["n_neighbors"] == 15


def test_threshold_one_labels_every_cell(cellbench_joint):
    reference, query = cellbench_joint[:200].copy(), cellbench_joint[200:].copy()
    sl.tl.transfer_labels(query, reference, "cell_line_demuxlet", uncertainty_threshold=1.0, key_added="line")
    assert "line_expression_match" not in query.obs
    assert "Unknown" not in set(query.obs["line"].astype(str))
    out = sl.tl.transfer_labels(query, reference, "cell_line_demuxlet", key_added="other", copy=True)
    assert "other" in out.obs
    assert "other" not in query.obs  # copy=True leaves the query as it was


def test_bad_input_fails_before_any_work(cellbench_joint):
    reference, query = cellbench_joint[:200].copy(), cellbench_joint[200:].copy()
    unlabelled = reference.copy()
    unlabelled.obs["cell_line_demuxlet"] = unlabelled.obs["cell_line_demuxlet"].astype(object)
    unlabelled.obs.iloc[:3, unlabelled.obs.columns.get_loc("cell_line_demuxlet")] = np.nan
    other_dims = query.copy()
    other_dims.obsm["X_sclatent"] = other_dims.obsm["X_sclatent"][:, :5]
    theirs = query.copy()
    theirs.obs["mine"] = "kept"
    cases = [
        ((query, reference, "no_such_column"), {}, KeyError, "has no column"),
        ((query, unlabelled, "cell_line_demuxlet"), {}, ValueError, "3 reference cells have no label"),
        ((query, reference, "cell_line_demuxlet"), {"use_rep": "X_pca"}, KeyError, "has no 'X_pca'"),
        ((other_dims, reference, "cell_line_demuxlet"), {}, ValueError, "dimensions"),
        ((query, reference, "cell_line_demuxlet"), {"n_neighbors": 500}, ValueError, "n_neighbors"),
        ((query, reference, "cell_line_demuxlet"), {"uncertainty_threshold": 0}, ValueError, "uncertainty_threshold"),
        ((theirs, reference, "cell_line_demuxlet"), {"key_added": "mine"}, ValueError, "did not write"),
        ((query, reference, "cell_line_demuxlet"), {"novelty_quantile": 0}, ValueError, "novelty_quantile"),
        (
            (query, reference, "cell_line_demuxlet"),
            {"layer": "counts", "novelty_quantile": 0.05},
            KeyError,
            "not in reference.layers",
        ),
    ]
    for args, kwargs, error, match in cases:
        with pytest.raises(error, match=match) as raised:
            sl.tl.transfer_labels(*args, **kwargs)
        assert_names_fix(raised.value)
    assert list(theirs.obs["mine"].unique()) == ["kept"]
    assert "cell_line_demuxlet_transferred" not in query.obs
