from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

from ._utils import fill_doc, save_or_show

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from anndata import AnnData
    from matplotlib.axes import Axes


@fill_doc
def latent_path(
    path: AnnData,
    genes: Sequence[str] | None = None,
    *,
    n_genes: int = 30,
    standard_scale: bool = True,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Heatmap of genes along a decoded latent path (from :func:`sclatent.tl.latent_path`).

    Parameters
    ----------
    path
        The AnnData returned by :func:`sclatent.tl.latent_path`.
    genes
        Genes to draw; by default the ``n_genes`` that change most along the path, ordered by
        where they peak.
    n_genes
        Number of genes when ``genes`` is not given.
    standard_scale
        Scale each gene to [0, 1] along the path.
    {doc_ax_show_save}

    Returns
    -------
    The axes, unless the figure was shown.
    """
    if "position" not in path.obs:
        msg = "`path` must be the AnnData returned by `sl.tl.latent_path`."
        raise ValueError(msg)
    X = np.asarray(path.X, dtype=float)
    if genes is None:
        logx = np.log1p(np.maximum(X, 0))
        idx = np.argsort(-(logx.max(0) - logx.min(0)))[:n_genes]
    else:
        missing = [g for g in genes if g not in path.var_names]
        if missing:
            msg = f"genes not in the path's genes: {missing}; pick genes from `path.var_names`."
            raise KeyError(msg)
        idx = path.var_names.get_indexer(list(genes))
    M = X[:, idx].T
    if genes is None:
        order = np.argsort(M.argmax(1), kind="stable")
        M, idx = M[order], idx[order]
    if standard_scale:
        lo, hi = M.min(1, keepdims=True), M.max(1, keepdims=True)
        M = (M - lo) / np.where(hi > lo, hi - lo, 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, max(2.5, 0.18 * len(idx) + 1)))
    im = ax.imshow(M, aspect="auto", cmap="viridis", interpolation="nearest", extent=(0, 1, len(idx) - 0.5, -0.5))
    ax.set_yticks(np.arange(len(idx)))
    ax.set_yticklabels(path.var_names[idx], fontsize=7)
    start, end = (
        path.uns.get("latent_path", {}).get("start", "start"),
        path.uns.get("latent_path", {}).get("end", "end"),
    )
    ax.set_xlabel(f"position along the path ({start} → {end})")
    ax.figure.colorbar(im, ax=ax, label="scaled expression" if standard_scale else "expression", shrink=0.6)
    return None if save_or_show(ax.figure, show=show, save=save) else ax
