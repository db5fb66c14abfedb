from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

from ._utils import fill_doc, save_or_show

if TYPE_CHECKING:
    from pathlib import Path

    from anndata import AnnData
    from matplotlib.axes import Axes


@fill_doc
def history(
    adata: AnnData,
    key: str = "sclatent",
    *,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Train and validation loss per epoch, from ``adata.uns[key]['history']``.

    The loss is the negative ELBO per cell; the best epoch (restored by early stopping) is marked.

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`sclatent.tl.autoencode`.
    key
        The ``key_added`` of that call.
    {doc_ax_show_save}

    Returns
    -------
    The axes, unless the figure was shown.
    """
    if key not in adata.uns or "history" not in adata.uns[key]:
        msg = f"adata.uns[{key!r}]['history'] not found; run `sl.tl.autoencode(adata, key_added={key!r})` first."
        raise KeyError(msg)
    hist = adata.uns[key]["history"]
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    epochs = np.arange(len(hist["train_loss"]))
    ax.plot(epochs, hist["train_loss"], label="train")
    val = np.asarray(hist.get("validation_loss", []), dtype=float)
    if val.size and np.isfinite(val).any():
        ax.plot(epochs[: val.size], val, label="validation")
    best = adata.uns[key].get("training", {}).get("best_epoch")
    if best is not None:
        ax.axvline(int(best), color="grey", linestyle="--", linewidth=1, label=f"best epoch ({int(best)})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (negative ELBO per cell)")
    ax.legend(frameon=False)
    return None if save_or_show(ax.figure, show=show, save=save) else ax
