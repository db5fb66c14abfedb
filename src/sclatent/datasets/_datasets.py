from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np

if TYPE_CHECKING:
    from anndata import AnnData


def _read(name: str) -> AnnData:
    with files("sclatent.datasets").joinpath("data", f"{name}.h5ad").open("rb") as f:
        return ad.read_h5ad(f)


def pbmc3k() -> AnnData:
    """10x Genomics PBMC 3k: 2,700 peripheral blood mononuclear cells of a healthy donor, raw UMI counts.

    ``X`` holds raw integer counts (CSR, float32) for the 16,634 genes detected in at least one
    cell (genes with no count anywhere are left out). ``obs['cell_type']`` has the 8 cell types
    of scanpy's standard tutorial annotation for 2,638 cells; the 62 cells that its quality
    control removes are NaN.

    Origin and licence: counts from the 10x Genomics public data set (CC BY 4.0), as shipped in
    the ``desc`` PyPI package (MIT); labels matched by barcode.

    Returns
    -------
    AnnData of 2,700 cells × 16,634 genes.
    """
    return _read("pbmc3k")


def paul15() -> AnnData:
    """Paul15: 2,730 mouse myeloid progenitors (MARS-seq, 2015), raw counts.

    ``X`` holds raw integer counts (CSR, float32) for 3,451 genes.
    ``obs['paul15_clusters']`` has the 19 published clusters (erythroid, megakaryocyte,
    basophil, monocyte, neutrophil and dendritic-cell branches; e.g. ``7MEP``, ``1Ery``,
    ``9GMP``, ``14Mo``), and ``uns['iroot'] = 840`` is the stem-like root cell used in scanpy's
    diffusion pseudotime tutorial.

    Origin and licence: GEO GSE72857, as packaged by the ``desc`` project (MIT).

    Returns
    -------
    AnnData of 2,730 cells × 3,451 genes.
    """
    adata = _read("paul15")
    adata.uns["iroot"] = int(np.asarray(adata.uns["iroot"]).ravel()[0])  # stored as a 1-element array
    return adata
