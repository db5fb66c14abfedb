from __future__ import annotations

from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
from scipy.sparse.csgraph import dijkstra

from ._docs import fill_doc
from ._neighbors import ensure_neighbors
from ._pseudotime import _resolve_cell

if TYPE_CHECKING:
    from ..models import Autoencoder


def _endpoint(adata: ad.AnnData, latent: np.ndarray, spec, groupby: str | None) -> int:
    """Return a cell index from an index, a cell name, or (with ``groupby``) the cell nearest a group's centroid."""
    if groupby is not None:
        labels = adata.obs[groupby].astype(str).to_numpy()
        members = np.flatnonzero(labels == str(spec))
        if members.size == 0:
            msg = f"group {spec!r} not found in adata.obs[{groupby!r}]; pass one of {sorted(set(labels))[:20]}."
            raise ValueError(msg)
        centroid = latent[members].mean(0)
        return int(members[np.argmin(((latent[members] - centroid) ** 2).sum(1))])
    return _resolve_cell(adata, spec)


@fill_doc
def latent_path(
    data: ad.AnnData | Autoencoder,
    *,
    start: int | str,
    end: int | str,
    model: Autoencoder | None = None,
    groupby: str | None = None,
    n_steps: int = 50,
    use_rep: str = "X_sclatent",
    n_neighbors: int = 15,
    neighbors_key: str | None = None,
    transform_batch: str | None = None,
    library_size: float = 1e4,
) -> ad.AnnData:
    """Decode expression along a path between two cells or group centroids in the latent space.

    The path is the shortest path through the latent kNN graph, so it passes through states
    that cells actually occupy rather than cutting straight across empty space. It is resampled
    at ``n_steps`` points evenly spaced by arc length and decoded by the model.

    Parameters
    ----------
    data
        An AnnData with the latent in ``obsm[use_rep]`` (then pass ``model=``), or a trained
        :class:`~sclatent.models.Autoencoder` (its training cells are used).
    start, end
        Cell indices or names, or group labels when ``groupby`` is given (the cell nearest the
        group's centroid).
    model
        The model that made the latent, e.g. from ``sl.tl.autoencode(..., return_model=True)``.
    groupby
        Column of ``obs`` for ``start`` and ``end`` given as groups.
    n_steps
        Points along the path.
    {doc_graph}
    transform_batch
        Decode as if in this batch; by default the first batch category.
    library_size
        Library size the expression is normalised to (count likelihoods).

    Returns
    -------
    AnnData of ``n_steps`` × genes: ``X`` is decoded expression (as in
    :meth:`~sclatent.models.Autoencoder.get_denoised`); ``obs`` has ``position`` (0 to 1 along
    the path) and ``nearest_cell``; ``obsm['X_latent']`` the latent points; ``uns['latent_path']``
    the start and end cells and the cells the path passes through.
    """
    from ..models import Autoencoder  # imports torch on first use

    if isinstance(data, Autoencoder):
        model = data
        latent = model.get_latent()
        adata = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(latent.shape[0])]))
        adata.obsm[use_rep] = latent
    else:
        adata = data
        if model is None:
            msg = "decoding needs the model: pass `model=` (e.g. from `sl.tl.autoencode(..., return_model=True)`)."
            raise ValueError(msg)
        if use_rep not in adata.obsm:
            msg = f"adata.obsm[{use_rep!r}] not found; run `sl.tl.autoencode(adata)` first."
            raise KeyError(msg)
        latent = np.asarray(adata.obsm[use_rep])
        if latent.shape[1] != model.config.n_latent:
            msg = f"adata.obsm[{use_rep!r}] has {latent.shape[1]} dimensions; the model's latent has {model.config.n_latent}. Pass `use_rep=` the latent this model wrote (e.g. 'X_sclatent')."
            raise ValueError(msg)
    if n_steps < 2:
        msg = "n_steps must be at least 2."
        raise ValueError(msg)
    i, j = _endpoint(adata, latent, start, groupby), _endpoint(adata, latent, end, groupby)
    key = ensure_neighbors(adata, use_rep=use_rep, n_neighbors=n_neighbors, neighbors_key=neighbors_key, random_state=0)
    dist = adata.obsp[adata.uns[key]["distances_key"]]
    dist = dist.maximum(dist.T)
    lengths, pred = dijkstra(dist, directed=False, indices=i, return_predecessors=True)
    if not np.isfinite(lengths[j]):
        msg = "start and end lie in disconnected parts of the kNN graph; increase `n_neighbors`."
        raise ValueError(msg)
    cells = [j]
    while cells[-1] != i:
        cells.append(int(pred[cells[-1]]))
    cells = cells[::-1]
    points = latent[cells]
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    arc = arc / arc[-1] if arc[-1] > 0 else np.linspace(0, 1, len(cells))
    position = np.linspace(0, 1, n_steps)
    z = np.stack([np.interp(position, arc, points[:, d]) for d in range(points.shape[1])], axis=1)
    X = model.decode(z, batch=transform_batch, library_size=library_size)
    nearest = np.array(cells)[np.clip(np.searchsorted(arc, position), 0, len(cells) - 1)]
    out = ad.AnnData(
        X=X,
        obs=pd.DataFrame(
            {"position": position, "nearest_cell": adata.obs_names[nearest].to_numpy()},
            index=[f"step{k}" for k in range(n_steps)],
        ),
        var=pd.DataFrame(index=model.setup.var_names),
    )
    out.obsm["X_latent"] = z.astype(np.float32)
    out.uns["latent_path"] = {
        "start": str(adata.obs_names[i]),
        "end": str(adata.obs_names[j]),
        "path_cells": np.asarray(adata.obs_names[cells], dtype=str),
        "use_rep": use_rep,
    }
    return out
