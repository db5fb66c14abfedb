from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import scanpy as sc

if TYPE_CHECKING:
    from collections.abc import Callable

    from matplotlib.figure import Figure

_SHOW_SAVE = """show
        Show the figure; ``None`` follows ``sc.settings.autoshow``.
    save
        File to save the figure to; the extension picks the format (default: scanpy's)."""
_DOCS = {
    "{doc_show_save}": _SHOW_SAVE,
    "{doc_ax_show_save}": "ax\n        Axes to draw into (by default a new figure).\n    " + _SHOW_SAVE,
}


def fill_doc(func: Callable) -> Callable:
    """Fill the shared parameter descriptions (``{doc_show_save}``, ``{doc_ax_show_save}``) in a docstring."""
    for key, text in _DOCS.items():
        func.__doc__ = func.__doc__.replace(key, text)
    return func


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
