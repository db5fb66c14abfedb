from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._utils import fill_doc, save_or_show

if TYPE_CHECKING:
    from pathlib import Path

    from anndata import AnnData
    from matplotlib.axes import Axes


def _results(data: AnnData | pd.DataFrame, key: str) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    if key not in data.uns or "results" not in data.uns[key]:
        msg = f"adata.uns[{key!r}]['results'] not found; run `sl.tl.compare_embeddings(adata, ...)` first."
        raise KeyError(msg)
    return data.uns[key]["results"]


@fill_doc
def compare_embeddings(
    data: AnnData | pd.DataFrame,
    key: str = "sclatent_compare",
    *,
    kind: Literal["heatmap", "dotplot"] = "heatmap",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Plot the scores of :func:`sclatent.tl.compare_embeddings`: metrics in rows, embeddings in columns.

    Rows are grouped as bio conservation, batch correction and the aggregates; in each row the
    best value as written is in bold, for every embedding that reaches it, and none is bold
    when all embeddings tie.

    Parameters
    ----------
    data
        Annotated data matrix with the results in ``uns[key]``, or the returned DataFrame.
    key
        The ``key_added`` of that call.
    kind
        ``"heatmap"``: coloured cells with the value written in; ``"dotplot"``: dots sized and
        coloured by the value.
    {doc_ax_show_save}

    Returns
    -------
    The axes, unless the figure was shown.
    """
    if kind not in ("heatmap", "dotplot"):
        msg = f"kind must be 'heatmap' or 'dotplot', not {kind!r}."
        raise ValueError(msg)
    df = _results(data, key)
    order = list(dict.fromkeys(zip(df["category"], df["metric"], strict=True)))
    embeddings = list(dict.fromkeys(df["embedding"]))
    table = df.pivot_table(index=["category", "metric"], columns="embedding", values="value").reindex(
        index=order, columns=embeddings
    )
    values = table.to_numpy(dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 * len(embeddings) + 3, 0.4 * len(order) + 1))
    rows, cols = np.indices(values.shape)
    if kind == "heatmap":
        image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    else:
        image = ax.scatter(cols.ravel(), rows.ravel(), s=40 + 400 * np.nan_to_num(values.ravel()), c=values.ravel())
        image.set_clim(0, 1)
        ax.set_xlim(-0.5, len(embeddings) - 0.5)
        ax.set_ylim(len(order) - 0.5, -0.5)
    # the best value of each row as written (two decimals): every embedding that reaches it is bold,
    # none when all embeddings scored tie
    shown = np.round(values, 2)
    best = np.nanmax(np.where(np.isnan(shown), -np.inf, shown), axis=1)
    winners = (shown == best[:, None]) & ~np.isnan(shown)
    winners[winners.sum(axis=1) == (~np.isnan(shown)).sum(axis=1)] = False
    for i, j in zip(rows.ravel(), cols.ravel(), strict=True):
        if np.isnan(values[i, j]) or kind == "dotplot":
            continue
        colour = "black" if values[i, j] > 0.6 else "white"
        weight = "bold" if winners[i, j] else "normal"
        ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", color=colour, fontweight=weight, fontsize=8)
    ax.set_xticks(range(len(embeddings)), embeddings, rotation=30, ha="right")
    ax.set_yticks(range(len(order)), [f"{metric} ({category})" for category, metric in order])
    ax.figure.colorbar(image, ax=ax, label="score (higher is better)", shrink=0.8)
    return None if save_or_show(ax.figure, show=show, save=save) else ax
