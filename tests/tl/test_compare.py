"""sl.tl.compare_embeddings and its plot, on CellBench cell lines across two technologies."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import sclatent as sl

pytest.importorskip("scib_metrics")


@pytest.fixture(scope="module")
def compared(cellbench_3cl_trained):
    adata = cellbench_3cl_trained[0].copy()
    df = sl.tl.compare_embeddings(adata, ["X_sclatent"], label_key="cell_line_demuxlet", batch_key="batch")
    return adata, df


def _score(df, embedding, metric):
    return df.loc[(df["embedding"] == embedding) & (df["metric"] == metric), "value"].item()


def test_scores_batch_correction_against_pca_baseline(compared):
    adata, df = compared
    assert list(df.columns) == ["embedding", "category", "metric", "value"]
    assert set(df["embedding"]) == {"X_sclatent", "X_pca"}
    assert "X_pca" in adata.obsm  # the baseline was computed and kept
    assert adata.uns["sclatent_compare"]["results"] is df
    assert df["value"].between(0, 1).all()
    assert set(df["category"]) == {"bio conservation", "batch correction", "aggregate"}
    # the technologies mix in the sclatent latent (batch_key given), not in PCA of the raw data
    assert _score(df, "X_sclatent", "iLISI") > _score(df, "X_pca", "iLISI") + 0.3
    assert _score(df, "X_sclatent", "kBET") > _score(df, "X_pca", "kBET") + 0.3
    # while the cell lines (genotype truth) stay apart
    assert _score(df, "X_sclatent", "bio conservation") >= 0.75
    assert _score(df, "X_sclatent", "total") > _score(df, "X_pca", "total")
    for embedding in ("X_sclatent", "X_pca"):
        bio, batch = _score(df, embedding, "bio conservation"), _score(df, embedding, "batch correction")
        assert _score(df, embedding, "total") == pytest.approx(0.6 * bio + 0.4 * batch)


def test_without_batches_total_is_bio_and_existing_pca_is_used(compared):
    adata, _ = compared
    adata = adata.copy()
    pca = adata.obsm["X_pca"].copy()
    df = sl.tl.compare_embeddings(adata, "X_sclatent", label_key="cell_line_demuxlet", key_added="plain")
    assert set(df["category"]) == {"bio conservation", "aggregate"}
    np.testing.assert_array_equal(adata.obsm["X_pca"], pca)
    for embedding in ("X_sclatent", "X_pca"):
        assert _score(df, embedding, "total") == _score(df, embedding, "bio conservation")
    assert "plain" in adata.uns


@pytest.mark.parametrize("kind", ["heatmap", "dotplot"])
def test_plot_renders(compared, tmp_path, kind):
    adata, df = compared
    assert sl.pl.compare_embeddings(adata, kind=kind, show=False, save=tmp_path / "scores.png") is not None
    assert (tmp_path / "scores.png").stat().st_size > 15_000
    sl.pl.compare_embeddings(df, show=False)  # the returned DataFrame works too


def test_plot_bolds_every_tied_best_and_none_when_all_tie():
    import pandas as pd

    df = pd.DataFrame(
        {
            "embedding": ["X_a", "X_b", "X_c"] * 2,
            "category": ["bio conservation"] * 3 + ["aggregate"] * 3,
            "metric": ["Leiden NMI"] * 3 + ["total"] * 3,
            "value": [1.0, 0.9999, 0.9, 0.8, 0.8, 0.8],
        }
    )
    ax = sl.pl.compare_embeddings(df, show=False)
    weight = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_fontweight() for t in ax.texts}
    assert [weight[0, j] for j in range(3)] == ["bold", "bold", "normal"]  # 1.00 and 1.00 as written
    assert [weight[1, j] for j in range(3)] == ["normal"] * 3  # all tie: nobody won


def test_bad_input_fails_before_scoring(compared, monkeypatch):
    adata, _ = compared
    adata = adata.copy()
    with pytest.raises(KeyError, match="not a column"):
        sl.tl.compare_embeddings(adata, label_key="cell_type")
    with pytest.raises(KeyError, match="autoencode"):
        sl.tl.compare_embeddings(adata, ["X_sclatent_other"], label_key="cell_line_demuxlet")
    adata.obs["one"] = "x"
    with pytest.raises(ValueError, match="single category"):
        sl.tl.compare_embeddings(adata, label_key="one")
    adata.obs.loc[adata.obs_names[0], "cell_line_demuxlet"] = np.nan
    with pytest.raises(ValueError, match="missing values"):
        sl.tl.compare_embeddings(adata, label_key="cell_line_demuxlet")
    with pytest.raises(KeyError, match="plot"):
        sl.pl.compare_embeddings(adata, key="plot", show=False)
    monkeypatch.setitem(sys.modules, "scib_metrics", None)
    with pytest.raises(ImportError, match=r"sclatent\[metrics\]"):
        sl.tl.compare_embeddings(adata, label_key="batch")


def test_pca_baseline_needs_counts(compared):
    adata, _ = compared
    adata = adata.copy()
    del adata.obsm["X_pca"]
    adata.X = adata.X.astype(np.float32) * 0.5
    with pytest.raises(ValueError, match=r"non-integer.*layer="):
        sl.tl.compare_embeddings(adata, label_key="cell_line_demuxlet")
    assert "X_pca" not in adata.obsm
