from __future__ import annotations

from typing import TYPE_CHECKING

import scanpy as sc
from scanpy import logging as logg

from ._neighbors import ensure_neighbors

if TYPE_CHECKING:
    from anndata import AnnData


def leiden(
    adata: AnnData,
    *,
    use_rep: str = "X_sclatent",
    n_neighbors: int = 15,
    resolution: float = 1.0,
    key_added: str = "sclatent_leiden",
    neighbors_key: str | None = None,
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Leiden clustering on the kNN graph of a latent space.

    Builds the graph with :func:`scanpy.pp.neighbors` on ``use_rep`` under its own
    ``neighbors_key`` (by default ``"sclatent_neighbors"``), so the user's default
    ``neighbors`` graph is left alone; a graph already there with the same ``use_rep`` and
    ``n_neighbors`` is reused. Then runs :func:`scanpy.tl.leiden` (igraph).

    Parameters
    ----------
    adata
        Annotated data matrix with the latent in ``obsm[use_rep]``.
    use_rep
        The latent space, e.g. ``"X_sclatent"`` from :func:`sclatent.tl.autoencode`.
    n_neighbors
        Neighbours in the kNN graph.
    resolution
        Higher values give more, smaller clusters. 1.0 suits data sets with many cell types
        (e.g. PBMCs: 0.5 to 1.0); for a handful of well-separated populations (e.g. a few cell
        lines) use 0.1 to 0.3.
    key_added
        Column of ``obs`` for the clusters.
    neighbors_key
        Where the graph lives in ``uns``/``obsp``; defaults to ``"<rep>_neighbors"``.
    random_state
        Seed of the graph construction and of Leiden.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy with ``copy=True``. Sets:

    ``adata.obs[key_added]`` : :class:`pandas.Categorical`
        Cluster labels.
    ``adata.uns[key_added]['params']`` : :class:`dict`
        Resolution, random state, iterations and the neighbors key.
    ``adata.uns[neighbors_key]``, ``adata.obsp[neighbors_key + '_distances' | '_connectivities']``
        The kNN graph, when it was built here.
    """
    adata = adata.copy() if copy else adata
    start = logg.info(f"running Leiden on {use_rep}")
    key = ensure_neighbors(
        adata, use_rep=use_rep, n_neighbors=n_neighbors, neighbors_key=neighbors_key, random_state=random_state
    )
    sc.tl.leiden(
        adata,
        resolution=resolution,
        key_added=key_added,
        neighbors_key=key,
        random_state=random_state,
        flavor="igraph",
        n_iterations=2,
        directed=False,
    )
    adata.uns[key_added]["params"]["neighbors_key"] = key
    adata.uns[key_added]["params"]["use_rep"] = use_rep
    logg.info(
        f"    found {adata.obs[key_added].nunique()} clusters",
        time=start,
        deep=f"added\n    {key_added!r}, the cluster labels (adata.obs, categorical)",
    )
    return adata if copy else None
