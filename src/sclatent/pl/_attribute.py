from __future__ import annotations

import math
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

from ._utils import fill_doc, save_or_show

if TYPE_CHECKING:
    from pathlib import Path

    from anndata import AnnData
    from matplotlib.figure import Figure


@fill_doc
def attribute(
    adata: AnnData,
    key: str = "sclatent_attribute",
    *,
    n_genes: int = 15,
    targets: list[str] | None = None,
    ncols: int = 4,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Figure | None:
    """Plot the top genes of :func:`sclatent.tl.attribute`, one panel per target (as :func:`scanpy.pl.rank_genes_groups`).

    Parameters
    ----------
    adata
        Annotated data matrix with the results in ``uns[key]``.
    key
        The ``key_added`` of that call.
    n_genes
        Genes per panel, the highest scores first.
    targets
        Targets to show; by default all.
    ncols
        Panels per row.
    {doc_show_save}

    Returns
    -------
    The figure, unless it was shown.
    """
    if key not in adata.uns or "results" not in adata.uns[key]:
        msg = f"adata.uns[{key!r}] holds no attributions; run `sl.tl.attribute(adata, model, ...)` first."
        raise KeyError(msg)
    res = adata.uns[key]["results"]
    known = list(dict.fromkeys(res["target"].astype(str)))
    targets = known if targets is None else [str(t) for t in targets]
    unknown = [t for t in targets if t not in known]
    if unknown:
        msg = f"targets {unknown} are not in adata.uns[{key!r}]; pick from {known}."
        raise ValueError(msg)
    ncols = max(1, min(ncols, len(targets)))
    nrows = math.ceil(len(targets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 0.22 * n_genes * nrows + 1.0 * nrows), squeeze=False)
    for ax, target in zip(axes.ravel(), targets, strict=False):
        top = res[res["target"].astype(str) == target].nsmallest(n_genes, "rank")
        ax.barh(np.arange(len(top)), top["score"].to_numpy(), color="tab:blue")
        ax.set_yticks(np.arange(len(top)), top["gene"].tolist(), fontsize=7)
        ax.invert_yaxis()
        ax.set_title(target, fontsize=9)
        ax.set_xlabel("mean attribution", fontsize=8)
    for ax in axes.ravel()[len(targets) :]:
        ax.set_visible(False)
    fig.tight_layout()
    shown = save_or_show(fig, show=show, save=save)
    return None if shown else fig
