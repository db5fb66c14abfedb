"""Pseudotime, PAGA, gene trends and decoded paths on paul15 (bundled), against its known lineage order."""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks.trajectory import scanpy_dpt
from scipy.stats import spearmanr

import sclatent as sl

from sclatent_test_helpers import PAUL15_TRAINING

ERYTHROID = ["7MEP", "6Ery", "5Ery", "4Ery", "3Ery", "2Ery", "1Ery"]  # rising haemoglobin
MYELOID = {"9GMP": 0, "10GMP": 0, "14Mo": 1, "15Mo": 1, "16Neu": 1}


def _order_correlation(adata, key, order: dict[str, int]) -> float:
    clusters = adata.obs["paul15_clusters"].astype(str)
    mask = clusters.isin(list(order)).to_numpy()
    return spearmanr(adata.obs[key].to_numpy()[mask], clusters[mask].map(order).to_numpy())[0]


def _perfect_binary_spearman(adata, order: dict[str, int]) -> float:
    """Spearman of an ordering that puts every cell of the earlier group first (ties stay tied in the order)."""
    clusters = adata.obs["paul15_clusters"].astype(str)
    y = np.sort(clusters[clusters.isin(list(order))].map(order).to_numpy())
    return spearmanr(np.arange(len(y)), y)[0]


def test_default_latent_orders_the_erythroid_lineage_at_least_as_well_as_dpt_on_pca(paul15_trained):
    """The package's defaults (not the tutorial's settings) against scanpy's DPT on the same 1,000 genes and root."""
    adata = paul15_trained[0].copy()  # raw counts of the 1,000 genes in X
    adata.obs["dpt_on_pca"] = scanpy_dpt(adata, 840)
    sl.tl.autoencode(adata, random_state=0, progress_bar=False, denoise=False, key_added="defaults")
    sl.tl.pseudotime(adata, root=840, use_rep="X_defaults", n_neighbors=30, key_added="defaults_pseudotime")
    ours = _order_correlation(adata, "defaults_pseudotime", {c: i for i, c in enumerate(ERYTHROID)})
    dpt = _order_correlation(adata, "dpt_on_pca", {c: i for i, c in enumerate(ERYTHROID)})
    # Measured (benchmarks/trajectory.py): defaults 0.814 (seed 0; 0.810-0.823 over seeds 0-2), DPT 0.797.
    assert ours >= dpt, f"erythroid Spearman: sclatent defaults {ours:.3f}, DPT on PCA {dpt:.3f}"
    # the myeloid order too: 98% of its ceiling with two tied groups (measured 0.721 against 0.729)
    myeloid = _order_correlation(adata, "defaults_pseudotime", MYELOID)
    assert myeloid >= 0.98 * _perfect_binary_spearman(adata, MYELOID), f"myeloid Spearman {myeloid:.3f}"


@pytest.fixture(scope="module")
def paul(paul15_trained):
    adata, model = paul15_trained
    adata = adata.copy()
    sl.tl.pseudotime(adata, root=840, n_neighbors=30)
    return adata, model


def test_pseudotime_follows_known_lineage_order(paul):
    adata, _ = paul
    erythroid = _order_correlation(adata, "sclatent_pseudotime", {c: i for i, c in enumerate(ERYTHROID)})
    myeloid = _order_correlation(adata, "sclatent_pseudotime", MYELOID)
    # Measured (benchmarks/trajectory.py, seeds 0-2): erythroid 0.814-0.828, myeloid 0.726;
    # scanpy's DPT on 30 PCs of the same 1,000 genes gives 0.797 and 0.686.
    assert erythroid >= 0.80, f"erythroid Spearman {erythroid:.3f} ({PAUL15_TRAINING})"
    # With two tied groups the myeloid Spearman cannot exceed that of a perfect ordering (0.729
    # here), so it is held to 98% of that ceiling.
    ceiling = _perfect_binary_spearman(adata, MYELOID)
    assert ceiling < 0.75
    assert myeloid >= 0.98 * ceiling, f"myeloid Spearman {myeloid:.3f}, ceiling {ceiling:.3f} ({PAUL15_TRAINING})"
    medians = adata.obs.groupby(adata.obs["paul15_clusters"].astype(str))["sclatent_pseudotime"].median()
    assert max(medians["9GMP"], medians["10GMP"]) < min(medians["14Mo"], medians["15Mo"], medians["16Neu"])
    assert adata.obs["sclatent_pseudotime"].iloc[840] == 0
    assert adata.uns["sclatent_pseudotime"]["params"]["root"] == 840
    assert "X_diffmap" not in adata.obsm  # the user's slots are left alone


def test_root_cell_from_group_and_gene(paul):
    adata, _ = paul
    adata = adata.copy()
    iroot = sl.tl.root_cell(adata, groupby="paul15_clusters", group="7MEP")
    assert adata.uns["iroot"] == iroot
    assert adata.obs["paul15_clusters"].iloc[iroot] == "7MEP"
    # a root at the start of the erythroid lineage gives an early pseudotime to progenitors
    pt = adata.obs["sclatent_pseudotime"]
    assert pt.iloc[iroot] < pt[adata.obs["paul15_clusters"] == "1Ery"].median()
    iroot_gene = sl.tl.root_cell(adata, gene="Hba-a2")
    assert adata.obs["paul15_clusters"].iloc[iroot_gene].endswith("Ery")


def test_gene_trends_haemoglobin_rises_along_erythroid_branch(paul):
    adata, _ = paul
    df = sl.tl.gene_trends(
        adata,
        ["Hba-a2", "Mpo"],
        groupby="paul15_clusters",
        lineages={"erythroid": ERYTHROID, "myeloid": list(MYELOID)},
    )
    assert set(df.columns) >= {"lineage", "gene", "pseudotime", "mean", "lower", "upper"}
    assert adata.uns["sclatent_gene_trends"]["trends"] is df
    hba = df[(df["lineage"] == "erythroid") & (df["gene"] == "Hba-a2")]
    assert spearmanr(hba["pseudotime"], hba["mean"])[0] > 0.5
    # and per cell, within the erythroid branch
    ery = adata.obs["paul15_clusters"].isin(ERYTHROID).to_numpy()
    hb = adata[:, "Hba-a2"].layers["sclatent_denoised"].ravel()[ery]
    assert spearmanr(adata.obs["sclatent_pseudotime"].to_numpy()[ery], hb)[0] > 0


def test_paga_on_latent_graph(paul):
    adata, _ = paul
    adata = adata.copy()
    sl.tl.paga(adata, groups="paul15_clusters")
    conn = adata.uns["paga"]["connectivities"]
    groups = list(adata.obs["paul15_clusters"].cat.categories)
    assert conn.shape == (len(groups), len(groups))
    # neighbouring stages of the erythroid lineage are connected more than erythrocytes and monocytes
    c = conn.toarray()
    assert c[groups.index("2Ery"), groups.index("3Ery")] > c[groups.index("2Ery"), groups.index("14Mo")]


def test_latent_path_from_progenitor_to_erythrocyte(paul):
    adata, model = paul
    path = sl.tl.latent_path(adata, model=model, start="7MEP", end="1Ery", groupby="paul15_clusters", n_steps=30)
    assert path.shape == (30, adata.n_vars)
    assert path.obs["position"].iloc[0] == 0
    assert path.obs["position"].iloc[-1] == 1
    hba = path[:, "Hba-a2"].X.ravel()
    assert spearmanr(path.obs["position"], hba)[0] > 0.8
    assert hba[-1] > 3 * hba[0]
    # the path goes through the cells in between, not straight across empty space
    visited = adata.obs.loc[path.uns["latent_path"]["path_cells"], "paul15_clusters"].astype(str)
    assert set(visited) & {"6Ery", "5Ery", "4Ery", "3Ery", "2Ery"}
    # from the model alone, too
    path2 = sl.tl.latent_path(model, start=840, end=int(np.flatnonzero(adata.obs["paul15_clusters"] == "1Ery")[0]))
    assert path2.n_obs == 50


def test_plots_render(paul, tmp_path):
    adata, model = paul
    sl.tl.gene_trends(adata, ["Hba-a2", "Mpo", "Car2"], groupby="paul15_clusters", lineages={"erythroid": ERYTHROID})
    path = sl.tl.latent_path(adata, model=model, start="7MEP", end="1Ery", groupby="paul15_clusters")
    outputs = {
        "history": sl.pl.history(adata, show=False, save=tmp_path / "history.png"),
        "trends": sl.pl.gene_trends(adata, show=False, save=tmp_path / "trends.png"),
        "path": sl.pl.latent_path(path, n_genes=20, show=False, save=tmp_path / "path.png"),
    }
    assert all(v is not None for v in outputs.values())
    for name in ("history", "trends", "path"):
        assert (tmp_path / f"{name}.png").stat().st_size > 15_000, name
