from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pytest
import scanpy as sc
from benchmarks.scale import resample
from sklearn.metrics import adjusted_rand_score

import sclatent as sl

mpl.use("Agg")


def test_cellbench_5_lines_recovered(cellbench_5cl):
    adata = cellbench_5cl.copy()
    sl.tl.autoencode(adata, batch_key="batch", progress_bar=False, denoise=False)
    sl.tl.leiden(adata, resolution=0.2)
    ari = adjusted_rand_score(adata.obs["cell_line_demuxlet"], adata.obs["sclatent_leiden"])
    assert ari >= 0.9, f"ARI {ari:.3f}, {adata.obs['sclatent_leiden'].nunique()} clusters"


def test_leiden_on_more_than_8k_cells():
    # scanpy's neighbors fails from about 8k cells with pynndescent 0.7 and scipy >= 1.17 ('csr_array' object has
    # no attribute 'getnnz'); this test fails there, which is why pyproject.toml pins pynndescent<0.7
    adata = resample(9_000, seed=0, chunk=9_000)  # PBMC 3k cells resampled with Poisson noise
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=10, random_state=0)
    sl.tl.leiden(adata, use_rep="X_pca", resolution=0.5, neighbors_key="knn")  # above 8,192 cells: pynndescent
    graph = adata.obsp["knn_distances"]
    assert graph.shape == (9_000, 9_000)
    assert np.diff(graph.indptr).min() >= 14  # every cell has its neighbours (15, the cell itself included)
    assert adata.obs["sclatent_leiden"].nunique() >= 5


@pytest.fixture
def with_latent(pbmc_small):
    sl.tl.autoencode(pbmc_small, max_epochs=5, progress_bar=False, denoise=False)
    return pbmc_small


def test_leiden_uses_its_own_graph_and_reuses_it(with_latent):
    adata = with_latent
    sc.pp.neighbors(adata, n_neighbors=5, use_rep="X_sclatent")  # the user's own graph
    user_conn = adata.obsp["connectivities"].copy()
    sl.tl.leiden(adata, resolution=0.5)
    assert isinstance(adata.obs["sclatent_leiden"].dtype, __import__("pandas").CategoricalDtype)
    assert adata.uns["sclatent_leiden"]["params"]["neighbors_key"] == "sclatent_neighbors"
    assert "sclatent_neighbors_connectivities" in adata.obsp
    assert (adata.obsp["connectivities"] != user_conn).nnz == 0  # untouched
    graph = adata.obsp["sclatent_neighbors_connectivities"]
    sl.tl.leiden(adata, resolution=1.0, key_added="fine")
    assert adata.obsp["sclatent_neighbors_connectivities"] is graph  # reused, not rebuilt
    sl.tl.leiden(adata, n_neighbors=10, key_added="k10")
    assert adata.obsp["sclatent_neighbors_connectivities"] is not graph  # other settings, rebuilt
    assert adata.obs["fine"].nunique() >= adata.obs["sclatent_leiden"].nunique()


def test_umap_and_scanpy_plotting(with_latent, tmp_path):
    adata = with_latent
    sl.tl.leiden(adata)
    sl.tl.umap(adata)
    assert adata.obsm["X_sclatent_umap"].shape == (adata.n_obs, 2)
    fig = sc.pl.embedding(adata, basis="X_sclatent_umap", color="sclatent_leiden", show=False, return_fig=True)
    fig.savefig(tmp_path / "umap.png")
    assert (tmp_path / "umap.png").stat().st_size > 10_000


def test_order_errors_name_the_step(pbmc_small):
    with pytest.raises(KeyError, match=r"sl\.tl\.autoencode"):
        sl.tl.leiden(pbmc_small)
    with pytest.raises(KeyError, match=r"sl\.tl\.autoencode"):
        sl.tl.umap(pbmc_small)
    with pytest.raises(ValueError, match=r"sl\.tl\.root_cell"):
        sl.tl.pseudotime(pbmc_small)
    with pytest.raises(KeyError, match=r"sl\.tl\.pseudotime"):
        sl.tl.gene_trends(pbmc_small, ["CD3E"] if "CD3E" in pbmc_small.var_names else [pbmc_small.var_names[0]])
    with pytest.raises(KeyError, match=r"sl\.tl\.leiden"):
        sl.tl.paga(pbmc_small, groups="sclatent_leiden")
    with pytest.raises(KeyError, match=r"sl\.tl\.autoencode"):
        sl.pl.history(pbmc_small)


def test_copy_leaves_input(with_latent):
    out = sl.tl.leiden(with_latent, copy=True)
    assert "sclatent_leiden" in out.obs
    assert "sclatent_leiden" not in with_latent.obs
    assert np.isfinite(out.obsm["X_sclatent"]).all()
