"""Parameter descriptions shared by the functions that work on the latent kNN graph."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

doc_graph = """\
use_rep
        The latent space, e.g. ``"X_sclatent"`` from :func:`sclatent.tl.autoencode`.
    n_neighbors
        Neighbours of the kNN graph (built with :func:`scanpy.pp.neighbors` if not there yet).
    neighbors_key
        Where the graph lives in ``uns``/``obsp``; defaults to ``"<rep>_neighbors"``."""


def fill_doc(func: Callable) -> Callable:
    """Fill ``{doc_graph}`` in ``func``'s docstring."""
    func.__doc__ = func.__doc__.replace("{doc_graph}", doc_graph)
    return func
