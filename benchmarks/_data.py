"""The data every benchmark starts from (raw counts of the most variable genes), and a quiet run."""

from __future__ import annotations

import logging
import warnings

import scanpy as sc

import sclatent as sl


def hvg_counts(adata: sc.AnnData, n_top_genes: int = 2000, batch_key: str | None = None) -> sc.AnnData:
    """Raw counts of the ``n_top_genes`` most variable genes, chosen on a log-normalised copy (all genes if fewer)."""
    if adata.n_vars <= n_top_genes:
        return adata
    norm = adata.copy()
    sc.pp.normalize_total(norm, target_sum=1e4)
    sc.pp.log1p(norm)
    sc.pp.highly_variable_genes(norm, n_top_genes=n_top_genes, flavor="seurat", batch_key=batch_key)
    return adata[:, norm.var["highly_variable"].to_numpy()].copy()


def load_pbmc() -> sc.AnnData:
    """PBMC 3k (bundled): the 2,638 annotated cells, raw counts of 2,000 highly variable genes."""
    adata = sl.datasets.pbmc3k()
    return hvg_counts(adata[adata.obs["cell_type"].notna()].copy())


def quiet(*loggers: str) -> None:
    """Silence warnings, scanpy, and the training and scoring libraries' loggers (plus ``loggers``) below WARNING."""
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "jax", "scib_metrics", *loggers):
        logging.getLogger(name).setLevel(logging.WARNING)
    sc.settings.verbosity = 0
