from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData


def _lineage_masks(
    adata: AnnData, groupby: str | None, lineages: Mapping[str, Sequence[str]] | None
) -> dict[str, np.ndarray]:
    if groupby is None:
        if lineages is not None:
            msg = "`lineages` needs `groupby`, the obs column whose groups they list; pass both or neither."
            raise ValueError(msg)
        return {"all": np.ones(adata.n_obs, dtype=bool)}
    if groupby not in adata.obs:
        msg = f"{groupby!r} is not a column of adata.obs; pass one of {list(adata.obs.columns)}."
        raise KeyError(msg)
    labels = adata.obs[groupby].astype(str)
    if lineages is None:
        return {str(c): (labels == str(c)).to_numpy() for c in pd.unique(labels)}
    masks = {}
    for name, groups in lineages.items():
        unknown = sorted(set(map(str, groups)) - set(labels))
        if unknown:
            msg = f"lineage {name!r} lists groups not in adata.obs[{groupby!r}]: {unknown}; pick groups from {sorted(labels.unique())[:20]}."
            raise ValueError(msg)
        masks[str(name)] = labels.isin([str(g) for g in groups]).to_numpy()
    return masks


def gene_trends(
    adata: AnnData,
    genes: Sequence[str],
    *,
    pseudotime_key: str = "sclatent_pseudotime",
    layer: str | None = "sclatent_denoised",
    groupby: str | None = None,
    lineages: Mapping[str, Sequence[str]] | None = None,
    n_points: int = 50,
    bandwidth: float = 0.05,
    key_added: str = "sclatent_gene_trends",
) -> pd.DataFrame:
    """Smoothed expression of genes along pseudotime, per lineage.

    At ``n_points`` evenly spaced pseudotimes, each gene's expression is averaged over cells
    with Gaussian weights on their pseudotime distance (``bandwidth`` as a fraction of the
    lineage's pseudotime range); the band is ± one weighted standard deviation.

    Parameters
    ----------
    adata
        Annotated data matrix with a pseudotime in ``obs[pseudotime_key]``.
    genes
        Genes to follow.
    pseudotime_key
        Column of ``obs`` with the pseudotime (see :func:`sclatent.tl.pseudotime`).
    layer
        Expression to smooth; the denoised layer of :func:`sclatent.tl.autoencode` by default,
        ``None`` for ``X``.
    groupby
        Column of ``obs`` with groups (e.g. clusters).
    lineages
        Lineage name → the groups of ``groupby`` it passes through, e.g.
        ``{"erythroid": ["7MEP", "6Ery", …], "myeloid": ["9GMP", "14Mo", …]}``. Without it,
        each group of ``groupby`` is a lineage; without ``groupby``, all cells are one.
    n_points
        Pseudotime points per lineage.
    bandwidth
        Width of the Gaussian kernel, as a fraction of the lineage's pseudotime range.
    key_added
        Key in ``uns``.

    Returns
    -------
    A tidy :class:`pandas.DataFrame` with columns ``lineage``, ``gene``, ``pseudotime``,
    ``mean``, ``lower``, ``upper`` and ``n_cells`` (cells in the lineage). Also stored as
    ``adata.uns[key_added]['trends']``, with the settings in ``adata.uns[key_added]['params']``.
    """
    if pseudotime_key not in adata.obs:
        msg = f"adata.obs[{pseudotime_key!r}] not found; run `sl.tl.pseudotime(adata)` first."
        raise KeyError(msg)
    if layer is not None and layer not in adata.layers:
        hint = " run `sl.tl.autoencode(adata)` first, or" if layer.endswith("_denoised") else ""
        msg = f"layer {layer!r} not found;{hint} pass `layer=None` for adata.X."
        raise KeyError(msg)
    genes = [genes] if isinstance(genes, str) else list(genes)
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        msg = f"genes not in adata.var_names: {missing}; pass genes from adata.var_names."
        raise KeyError(msg)
    X = adata.layers[layer] if layer is not None else adata.X
    X = X[:, adata.var_names.get_indexer(genes)]
    X = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    t_all = adata.obs[pseudotime_key].to_numpy(dtype=np.float64)
    rows = []
    for name, mask in _lineage_masks(adata, groupby, lineages).items():
        mask = mask & np.isfinite(t_all)
        if mask.sum() < 2:
            continue
        t, x = t_all[mask], X[mask]
        grid = np.linspace(t.min(), t.max(), n_points)
        h = max(bandwidth * (t.max() - t.min()), 1e-12)
        w = np.exp(-0.5 * ((grid[:, None] - t[None, :]) / h) ** 2)
        w /= w.sum(1, keepdims=True)
        mean = w @ x
        sd = np.sqrt(np.maximum(w @ x**2 - mean**2, 0))
        for j, gene in enumerate(genes):
            rows.append(
                pd.DataFrame(
                    {
                        "lineage": name,
                        "gene": gene,
                        "pseudotime": grid,
                        "mean": mean[:, j],
                        "lower": mean[:, j] - sd[:, j],
                        "upper": mean[:, j] + sd[:, j],
                        "n_cells": int(mask.sum()),
                    }
                )
            )
    if not rows:
        msg = "no lineage has two or more cells with a finite pseudotime; run `sl.tl.pseudotime(adata)` from a root connected to the lineages' cells."
        raise ValueError(msg)
    df = pd.concat(rows, ignore_index=True)
    df["lineage"] = df["lineage"].astype("category")
    df["gene"] = df["gene"].astype("category")
    params = {"pseudotime_key": pseudotime_key, "n_points": n_points, "bandwidth": bandwidth}
    params |= {k: v for k, v in (("layer", layer), ("groupby", groupby)) if v is not None}
    adata.uns[key_added] = {"trends": df, "params": params}
    return df
