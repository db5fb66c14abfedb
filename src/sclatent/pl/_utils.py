from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import scanpy as sc

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def save_or_show(fig: Figure, *, show: bool | None, save: str | Path | None):
    """Save to ``save`` (a file path; the extension picks the format) and show like scanpy.

    ``show=None`` follows ``sc.settings.autoshow``. Returns ``True`` when the figure was shown.
    """
    if save is not None:
        path = Path(save)
        if path.suffix == "":
            path = path.with_suffix(f".{sc.settings.file_format_figs}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")  # dpi from rcParams, as set by sc.set_figure_params
    if show is None:
        show = sc.settings.autoshow and plt.get_backend().lower() != "agg"
    if show:
        plt.show()
    return show
