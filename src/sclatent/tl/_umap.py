from __future__ import annotations

from typing import TYPE_CHECKING

import scanpy as sc

from ._docs import fill_doc
from ._neighbors import ensure_neighbors

if TYPE_CHECKING:
    from anndata import AnnData


@fill_doc
def umap(
    adata: AnnData,
    *,
    use_rep: str = "X_sclatent",
    n_neighbors: int = 15,
    neighbors_key: str | None = None,
    key_added: str = "X_sclatent_umap",
    min_dist: float = 0.5,
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """UMAP of a latent space, on the same kNN graph as :func:`sclatent.tl.leiden`.

    Parameters
    ----------
    adata
        Annotated data matrix with the latent in ``obsm[use_rep]``.
    {doc_graph}
    key_added
        ``obsm`` key of the embedding; plot it with
        ``sc.pl.embedding(adata, basis="X_sclatent_umap")``.
    min_dist
        UMAP's minimum distance.
    random_state
        Seed.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy with ``copy=True``. Sets:

    ``adata.obsm[key_added]`` : :class:`numpy.ndarray`
        The two-dimensional embedding.
    ``adata.uns[key_added]['params']`` : :class:`dict`
        UMAP's parameters.
    """
    adata = adata.copy() if copy else adata
    key = ensure_neighbors(
        adata, use_rep=use_rep, n_neighbors=n_neighbors, neighbors_key=neighbors_key, random_state=random_state
    )
    sc.tl.umap(adata, neighbors_key=key, key_added=key_added, min_dist=min_dist, random_state=random_state)
    return adata if copy else None
