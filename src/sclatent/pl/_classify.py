from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._utils import fill_doc, save_or_show

if TYPE_CHECKING:
    from pathlib import Path

    from anndata import AnnData
    from matplotlib.figure import Figure

_NAMES = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "macro_f1": "macro-F1",
    "auroc": "AUROC (one vs rest)",
    "ece": "calibration error (lower is better)",
}


@fill_doc
def classify(
    adata: AnnData,
    key: str = "sclatent_classify",
    *,
    holdout: bool | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Figure | None:
    """Plot the results of :func:`sclatent.tl.classify`: the confusion matrix, and the metrics next to the baseline.

    Left, the confusion matrix as fractions of each true class (rows), counts written in.
    Right, each metric for the classifier and the baseline: the mean over folds with the folds
    as dots, or the hold-out's value.

    Parameters
    ----------
    adata
        Annotated data matrix with the results in ``uns[key]``.
    key
        The ``key_added`` of that call.
    holdout
        Show the hold-out's confusion matrix and metrics instead of the cross-validation's;
        by default, the hold-out's when there is one.
    {doc_show_save}

    Returns
    -------
    The figure, unless it was shown.
    """
    if key not in adata.uns or "folds" not in adata.uns[key]:
        msg = f"adata.uns[{key!r}] holds no classification results; run `sl.tl.classify(adata, ...)` first."
        raise KeyError(msg)
    res = adata.uns[key]
    has_holdout = len(res["holdout"]) > 0
    if holdout is None:
        holdout = has_holdout
    if holdout and not has_holdout:
        msg = "this classification has no hold-out; run `sl.tl.classify(..., holdout={...})`, or pass holdout=False."
        raise ValueError(msg)
    classes = list(res["classes"])
    counts = np.asarray(res["holdout_confusion_matrix" if holdout else "confusion_matrix"])
    table = pd.DataFrame(res["holdout" if holdout else "folds"])

    fig, (left, right) = plt.subplots(1, 2, figsize=(8 + 0.4 * len(classes), 3.5 + 0.3 * len(classes)))
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    left.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            left.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                color="white" if fractions[i, j] > 0.5 else "black",
                fontsize=8,
            )
    left.set_xticks(range(len(classes)), classes, rotation=90)
    left.set_yticks(range(len(classes)), classes)
    left.set_xlabel("predicted")
    left.set_ylabel("true")
    left.set_title("hold-out" if holdout else "out of fold")

    metrics = [m for m in _NAMES if m in set(table["metric"])]
    methods = [m for m in ("sclatent", "baseline") if m in set(table["method"])]
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        sub = table[table["method"] == method]
        means = [sub.loc[sub["metric"] == m, "value"].mean() for m in metrics]
        y = np.arange(len(metrics)) + k * width
        right.barh(y, means, height=width, label=method)
        if not holdout:
            for i, m in enumerate(metrics):
                values = sub.loc[sub["metric"] == m, "value"].to_numpy()
                right.scatter(values, np.full(len(values), y[i]), s=8, color="black", zorder=3)
    right.set_yticks(np.arange(len(metrics)) + width * (len(methods) - 1) / 2, [_NAMES[m] for m in metrics])
    right.invert_yaxis()
    right.set_xlim(0, 1)
    right.legend(loc="lower right", fontsize=8)
    right.set_title("hold-out" if holdout else "mean over folds (dots: folds)")
    fig.tight_layout()
    shown = save_or_show(fig, show=show, save=save)
    return None if shown else fig
