"""Root choice and diffusion pseudotime on the latent kNN graph (scanpy's diffmap and dpt underneath)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from scanpy import logging as logg

from ._docs import fill_doc
from ._neighbors import ensure_neighbors

if TYPE_CHECKING:
    from anndata import AnnData


def _graph_only(adata: AnnData, key: str) -> AnnData:
    """Return a light AnnData that shares ``adata``'s kNN graph, so scanpy's diffmap/dpt write nothing into ``adata``."""
    info = adata.uns[key]
    g = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names))
    g.uns["neighbors"] = {k: v for k, v in info.items() if k not in ("connectivities_key", "distances_key")}
    g.uns["neighbors"]["connectivities_key"] = "connectivities"
    g.uns["neighbors"]["distances_key"] = "distances"
    g.obsp["connectivities"] = adata.obsp[info["connectivities_key"]]
    g.obsp["distances"] = adata.obsp[info["distances_key"]]
    return g


def _diffmap(adata: AnnData, key: str, n_comps: int, random_state: int) -> AnnData:
    g = _graph_only(adata, key)
    sc.tl.diffmap(g, n_comps=n_comps, random_state=random_state)
    return g


def _resolve_cell(adata: AnnData, cell: int | str) -> int:
    if isinstance(cell, str):
        pos = adata.obs_names.get_indexer([cell])[0]
        if pos < 0:
            msg = f"cell {cell!r} is not in adata.obs_names (pass `groupby=` to name groups)."
            raise KeyError(msg)
        return int(pos)
    cell = int(cell)
    if not 0 <= cell < adata.n_obs:
        msg = f"cell index {cell} is out of range for {adata.n_obs} cells; pass an index below {adata.n_obs} or a name in adata.obs_names."
        raise IndexError(msg)
    return cell


@fill_doc
def root_cell(
    adata: AnnData,
    *,
    groupby: str | None = None,
    group: str | None = None,
    gene: str | None = None,
    layer: str | None = "sclatent_denoised",
    use_rep: str = "X_sclatent",
    n_neighbors: int = 15,
    neighbors_key: str | None = None,
    random_state: int = 0,
) -> int:
    """Choose a root cell for pseudotime and store it in ``adata.uns['iroot']``.

    Three ways, in order of precedence:

    - ``groupby`` and ``group``: the cell of that group at the extreme of the first diffusion
      component (on the side where the group lies), e.g. the most stem-like progenitor;
    - ``gene``: the cell with the highest expression of a marker gene (from ``layer``,
      denoised by default, so single dropouts do not decide);
    - neither: automatically, the cell at the extreme of the first diffusion component that
      lies farthest from the bulk of the cells.

    Parameters
    ----------
    adata
        Annotated data matrix with the latent in ``obsm[use_rep]``.
    groupby
        Column of ``obs`` with groups.
    group
        The group to take the root from.
    gene
        A marker gene of the start state.
    layer
        Layer to read ``gene`` from; ``None`` for ``X``. Falls back to ``X`` when the layer is absent.
    {doc_graph}
    random_state
        Seed of the graph and diffusion map.

    Returns
    -------
    The index of the root cell. Sets ``adata.uns['iroot']`` and logs the cell's name.
    """
    if (groupby is None) != (group is None):
        msg = "pass both `groupby` and `group` (or neither)."
        raise ValueError(msg)
    if gene is not None and groupby is None:
        if gene not in adata.var_names:
            msg = f"gene {gene!r} is not in adata.var_names; pass a gene from adata.var_names."
            raise KeyError(msg)
        X = adata.layers[layer] if layer is not None and layer in adata.layers else adata.X
        col = X[:, adata.var_names.get_loc(gene)]
        col = col.toarray() if sp.issparse(col) else np.asarray(col)
        iroot = int(np.argmax(col.ravel()))
        how = f"highest {gene}"
    else:
        key = ensure_neighbors(
            adata, use_rep=use_rep, n_neighbors=n_neighbors, neighbors_key=neighbors_key, random_state=random_state
        )
        dc1 = _diffmap(adata, key, 10, random_state).obsm["X_diffmap"][:, 1]
        if groupby is not None:
            if groupby not in adata.obs:
                msg = f"{groupby!r} is not a column of adata.obs; pass one of {list(adata.obs.columns)}."
                raise KeyError(msg)
            in_group = (adata.obs[groupby].astype(str) == str(group)).to_numpy()
            if not in_group.any():
                msg = f"group {group!r} not found in adata.obs[{groupby!r}]; pass one of {sorted(adata.obs[groupby].astype(str).unique())[:20]}."
                raise ValueError(msg)
            pos = np.flatnonzero(in_group)
            side = np.sign(np.median(dc1[in_group]) - np.median(dc1)) or 1.0
            iroot = int(pos[np.argmax(side * dc1[in_group])])
            how = f"extreme of diffusion component 1 in {groupby}={group!r}"
        else:
            med = np.median(dc1)
            lo, hi = int(np.argmin(dc1)), int(np.argmax(dc1))
            iroot = lo if med - dc1[lo] > dc1[hi] - med else hi
            how = "extreme of diffusion component 1"
    adata.uns["iroot"] = iroot
    logg.info(f"root cell {iroot} ({adata.obs_names[iroot]!r}): {how}; stored in adata.uns['iroot']")
    return iroot


@fill_doc
def pseudotime(
    adata: AnnData,
    *,
    root: int | str | None = None,
    use_rep: str = "X_sclatent",
    n_neighbors: int = 15,
    neighbors_key: str | None = None,
    n_dcs: int = 10,
    n_branchings: int = 0,
    key_added: str = "sclatent_pseudotime",
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Diffusion pseudotime on the latent kNN graph.

    Runs :func:`scanpy.tl.diffmap` and :func:`scanpy.tl.dpt` on the graph of ``use_rep``,
    without touching the user's own ``X_diffmap`` or ``dpt_pseudotime``.

    Parameters
    ----------
    adata
        Annotated data matrix with the latent in ``obsm[use_rep]``.
    root
        Root cell (index or name); defaults to ``adata.uns['iroot']`` (see :func:`root_cell`).
    {doc_graph}
    n_dcs
        Diffusion components used by DPT.
    n_branchings
        Branchings to detect; with ``> 0`` each cell also gets a branch.
    key_added
        Name of the results.
    random_state
        Seed of the graph and the diffusion map.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy with ``copy=True``. Sets:

    ``adata.obs[key_added]`` : :class:`numpy.ndarray` of float
        Pseudotime in [0, 1] from the root.
    ``adata.obs[key_added + '_branch']`` : :class:`pandas.Categorical`
        DPT's branch of each cell, with ``n_branchings > 0``.
    ``adata.obsm['X_' + key_added + '_diffmap']`` : :class:`numpy.ndarray`
        The diffusion map.
    ``adata.uns[key_added]['params']`` : :class:`dict`
        Root, representation, graph key and settings.
    """
    if root is None:
        if "iroot" not in adata.uns:
            msg = "no root cell: pass `root=` or run `sl.tl.root_cell(adata, ...)` first."
            raise ValueError(msg)
        root = adata.uns["iroot"]
    iroot = _resolve_cell(adata, root)
    adata = adata.copy() if copy else adata
    start = logg.info(f"computing diffusion pseudotime on {use_rep}")
    key = ensure_neighbors(
        adata, use_rep=use_rep, n_neighbors=n_neighbors, neighbors_key=neighbors_key, random_state=random_state
    )
    g = _diffmap(adata, key, max(n_dcs, 2), random_state)
    g.uns["iroot"] = iroot
    sc.tl.dpt(g, n_dcs=n_dcs, n_branchings=n_branchings)
    adata.obs[key_added] = g.obs["dpt_pseudotime"].to_numpy()
    if n_branchings > 0:
        adata.obs[f"{key_added}_branch"] = g.obs["dpt_groups"].to_numpy()
        adata.obs[f"{key_added}_branch"] = adata.obs[f"{key_added}_branch"].astype("category")
    adata.obsm[f"X_{key_added}_diffmap"] = g.obsm["X_diffmap"]
    adata.uns[key_added] = {
        "params": {
            "root": iroot,
            "use_rep": use_rep,
            "neighbors_key": key,
            "n_dcs": n_dcs,
            "n_branchings": n_branchings,
        }
    }
    logg.info(
        "    finished",
        time=start,
        deep=f"added\n    {key_added!r}, the pseudotime (adata.obs)\n    'X_{key_added}_diffmap', the diffusion map (adata.obsm)",
    )
    return adata if copy else None


@fill_doc
def paga(
    adata: AnnData,
    *,
    groups: str,
    use_rep: str = "X_sclatent",
    n_neighbors: int = 15,
    neighbors_key: str | None = None,
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """PAGA (partition-based graph abstraction) of ``groups`` on the latent kNN graph.

    Parameters
    ----------
    adata
        Annotated data matrix with the latent in ``obsm[use_rep]``.
    groups
        Categorical column of ``obs``, e.g. the clusters of :func:`sclatent.tl.leiden`.
    {doc_graph}
    random_state
        Seed of the graph.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy with ``copy=True``. Sets ``adata.uns['paga']`` as
    :func:`scanpy.tl.paga` does (``connectivities``, ``connectivities_tree``, ``groups``), so
    that :func:`scanpy.pl.paga` draws it.
    """
    if groups not in adata.obs:
        msg = f"{groups!r} is not a column of adata.obs; run `sl.tl.leiden(adata)` first or pass existing groups."
        raise KeyError(msg)
    adata = adata.copy() if copy else adata
    if not isinstance(adata.obs[groups].dtype, pd.CategoricalDtype):
        adata.obs[groups] = adata.obs[groups].astype("category")
    key = ensure_neighbors(
        adata, use_rep=use_rep, n_neighbors=n_neighbors, neighbors_key=neighbors_key, random_state=random_state
    )
    sc.tl.paga(adata, groups=groups, neighbors_key=key)
    return adata if copy else None
