from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

import sclatent as sl

from sclatent_test_helpers import PAUL15_TRAINING

DATA = Path(__file__).parent / "data"


def hvg_counts(adata: ad.AnnData, n_top_genes: int = 2000, batch_key: str | None = None) -> ad.AnnData:
    """Raw counts of the highly variable genes (chosen on a log-normalised copy)."""
    norm = adata.copy()
    sc.pp.normalize_total(norm, target_sum=1e4)
    sc.pp.log1p(norm)
    sc.pp.highly_variable_genes(norm, n_top_genes=n_top_genes, flavor="seurat", batch_key=batch_key)
    return adata[:, norm.var["highly_variable"].to_numpy()].copy()


@pytest.fixture(scope="session")
def pbmc_hvg() -> ad.AnnData:
    """PBMC 3k annotated cells, raw counts of 2,000 highly variable genes."""
    adata = sl.datasets.pbmc3k()
    adata = adata[adata.obs["cell_type"].notna()].copy()
    return hvg_counts(adata)


@pytest.fixture
def pbmc_small(pbmc_hvg) -> ad.AnnData:
    """600 PBMC cells × 500 genes, a fresh copy per test, for fast checks."""
    rng = np.random.default_rng(0)
    cells = np.sort(rng.choice(pbmc_hvg.n_obs, 600, replace=False))
    adata = pbmc_hvg[cells, :500].copy()
    adata.obs["donor_batch"] = np.where(np.arange(adata.n_obs) % 2 == 0, "a", "b")
    adata.obs["pct_mito"] = rng.uniform(0, 5, adata.n_obs)
    adata.layers["counts"] = adata.X.copy()
    return adata


@pytest.fixture(scope="session")
def cellbench_3cl() -> ad.AnnData:
    """CellBench 3 cell lines × 2 technologies, singlets, raw counts of 2,000 HVGs."""
    adata = ad.read_h5ad(DATA / "cellbench_3cl_technologies.h5ad")
    adata = adata[adata.obs["demuxlet_cls"] == "SNG"].copy()
    return hvg_counts(adata, batch_key="batch")


@pytest.fixture(scope="session")
def cellbench_5cl() -> ad.AnnData:
    """CellBench 5 cell lines on 3 CEL-seq2 plates, singlets, raw counts of 2,000 HVGs."""
    adata = ad.read_h5ad(DATA / "cellbench_5cl_plates_singlets.h5ad")
    return hvg_counts(adata, batch_key="batch")


@pytest.fixture(scope="session")
def cellbench_3cl_trained(cellbench_3cl):
    """CellBench 3 lines with the default latent (technology as batch), and the model; copy the AnnData before changing it.

    One training that the tests of autoencode, compare_embeddings, label transfer and training from disk share.
    """
    adata = cellbench_3cl.copy()
    model = sl.tl.autoencode(adata, batch_key="batch", progress_bar=False, denoise=False, return_model=True)
    return adata, model


@pytest.fixture(scope="session")
def pbmc_trained(pbmc_hvg):
    """PBMC 3k with the default latent, and the model; copy the AnnData before changing it.

    One training that the tests of autoencode and classify share.
    """
    adata = pbmc_hvg.copy()
    model = sl.tl.autoencode(adata, progress_bar=False, denoise=False, return_model=True)
    return adata, model


@pytest.fixture(scope="session")
def paul15_trained():
    """paul15 (bundled) with the sclatent latent and denoised layer, and the model."""
    adata = sl.datasets.paul15()
    adata = hvg_counts(adata, n_top_genes=PAUL15_TRAINING["n_top_genes"])
    settings = {k: v for k, v in PAUL15_TRAINING.items() if k != "n_top_genes"}
    model = sl.tl.autoencode(adata, **settings, progress_bar=False, return_model=True)
    return adata, model
