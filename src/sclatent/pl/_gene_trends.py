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
def gene_trends(
    adata: AnnData,
    genes: Sequence[str] | None = None,
    *,
    key: str = "sclatent_gene_trends",
    lineages: Sequence[str] | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> list[Axes] | None:
    """Expression along pseudotime for several genes, with a ± 1 SD band; one panel per lineage.

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`sclatent.tl.gene_trends`.
    genes
        Genes to draw (default: all that were computed).
    key
        The ``key_added`` of :func:`sclatent.tl.gene_trends`.
    lineages
        Lineages to draw (default: all).
    {doc_show_save}

    Returns
    -------
    One axes per lineage, unless the figure was shown.
    """
    if key not in adata.uns or "trends" not in adata.uns[key]:
        msg = f"adata.uns[{key!r}]['trends'] not found; run `sl.tl.gene_trends(adata, genes)` first."
        raise KeyError(msg)
    df = adata.uns[key]["trends"]
    genes = list(genes) if genes is not None else list(dict.fromkeys(df["gene"].astype(str)))
    lineages = list(lineages) if lineages is not None else list(dict.fromkeys(df["lineage"].astype(str)))
    fig, axes = plt.subplots(1, len(lineages), figsize=(4.2 * len(lineages), 3.5), squeeze=False, sharey=True)
    axes = list(axes[0])
    colors = plt.get_cmap("tab10")
    for ax, lineage in zip(axes, lineages, strict=True):
        sub = df[df["lineage"].astype(str) == lineage]
        for k, gene in enumerate(genes):
            g = sub[sub["gene"].astype(str) == gene]
            if g.empty:
                continue
            c = colors(k % 10)
            ax.plot(g["pseudotime"], g["mean"], color=c, label=gene)
            ax.fill_between(g["pseudotime"], np.maximum(g["lower"], 0), g["upper"], color=c, alpha=0.2, linewidth=0)
        ax.set_title(lineage)
        ax.set_xlabel("pseudotime")
    axes[0].set_ylabel("expression")
    axes[-1].legend(frameon=False, bbox_to_anchor=(1.02, 1), loc="upper left")
    return None if save_or_show(fig, show=show, save=save) else axes
