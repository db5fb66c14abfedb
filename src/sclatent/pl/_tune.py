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
def tune(
    adata: AnnData,
    key: str = "sclatent",
    *,
    show: bool | None = None,
    save: str | Path | None = None,
) -> list[Axes] | None:
    """Optimisation history and parameter importances of :func:`sclatent.tl.tune`.

    Left: the metric of each complete trial, the best so far as a line, and the trials that
    did not complete (pruned, failed, interrupted) as ticks at the bottom. Right: the importance
    of each searched parameter (optuna's fANOVA, summing to 1). Drawn from
    ``adata.uns[key]['tune']`` alone, so it also works on an AnnData read from an h5ad file.

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`sclatent.tl.tune`.
    key
        The ``key_added`` of that call.
    {doc_show_save}

    Returns
    -------
    The two axes, unless the figure was shown.
    """
    if key not in adata.uns or "tune" not in adata.uns[key]:
        msg = f"adata.uns[{key!r}]['tune'] not found; run `sl.tl.tune(adata, key_added={key!r})` first."
        raise KeyError(msg)
    record = adata.uns[key]["tune"]
    trials = record["trials"]
    params = record["params"]
    maximise = params["direction"] == "maximize"
    fig, (ax_history, ax_importance) = plt.subplots(1, 2, figsize=(10, 3.5), width_ratios=[3, 2])

    number = trials["number"].to_numpy()
    value = trials["value"].to_numpy(dtype=float)
    done = trials["state"].astype(str).to_numpy() == "complete"
    ax_history.scatter(number[done], value[done], s=20, color="C0", zorder=3, label="complete trial")
    if done.any():
        filled = np.where(done, value, -np.inf if maximise else np.inf)
        best = np.maximum.accumulate(filled) if maximise else np.minimum.accumulate(filled)
        ax_history.step(
            number, np.where(np.isfinite(best), best, np.nan), where="post", color="C1", label="best so far"
        )
    if (~done).any():
        ax_history.plot(
            number[~done],
            np.zeros((~done).sum()),
            "|",
            color="grey",
            markersize=10,
            transform=ax_history.get_xaxis_transform(),
            label="pruned or stopped",
        )
    ax_history.set_xlabel("trial")
    direction = "higher" if maximise else "lower"
    ax_history.set_ylabel(f"{params['metric']} ({direction} is better)")
    ax_history.legend(frameon=False, fontsize="small")

    importances = dict(record.get("importances", {}))
    if importances:
        names = sorted(importances, key=importances.get)
        ax_importance.barh(names, [importances[n] for n in names], color="C0")
        ax_importance.set_xlabel("importance (fANOVA)")
    else:
        ax_importance.text(
            0.5, 0.5, "needs two complete trials\nwith different values", ha="center", va="center", color="grey"
        )
        ax_importance.set_axis_off()
    fig.tight_layout()
    axes = [ax_history, ax_importance]
    return None if save_or_show(fig, show=show, save=save) else axes
