"""Label transfer from a reference to a query by weighted nearest neighbours in a shared latent space."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scanpy import logging as logg

from ..models._setup import check_labels

if TYPE_CHECKING:
    from anndata import AnnData

#: The label given to query cells whose uncertainty is above the threshold.
UNKNOWN = "Unknown"
#: Reference cells sampled to learn how close reference cells are to each other.
_N_SCALE_CELLS = 20_000


def _embedding(adata: AnnData, use_rep: str, which: str) -> np.ndarray:
    if use_rep not in adata.obsm:
        msg = (
            f"{which}.obsm has no {use_rep!r} (it has {list(adata.obsm)}); pass `use_rep=` naming the shared latent, "
            "e.g. from `sl.tl.autoencode` on the reference and `sl.tl.map_query` on the query."
        )
        raise KeyError(msg)
    rep = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    if rep.ndim != 2 or rep.shape[0] != adata.n_obs:
        msg = f"{which}.obsm[{use_rep!r}] must be a cells × dimensions array, got shape {rep.shape}; pass an embedding."
        raise ValueError(msg)
    if not np.isfinite(rep).all():
        msg = (
            f"{which}.obsm[{use_rep!r}] holds NaN or infinite values; compute the embedding again or drop those cells."
        )
        raise ValueError(msg)
    return rep


def transfer_labels(
    query: AnnData,
    reference: AnnData,
    label_key: str,
    *,
    use_rep: str = "X_sclatent",
    n_neighbors: int = 15,
    uncertainty_threshold: float = 0.5,
    key_added: str | None = None,
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    r"""Transfer labels from a reference to a query by weighted nearest neighbours in a shared latent space.

    For each query cell, the ``n_neighbors`` nearest reference cells in ``use_rep`` vote for their
    label, each with weight :math:`\exp(-(d^2 - d_1^2) / h^2)`, where :math:`d` is its distance,
    :math:`d_1` the distance of the nearest one, and :math:`h` the median distance between a
    reference cell and its ``n_neighbors``-th reference neighbour. A cell's uncertainty combines two reasons for doubt:

    - the vote is split: :math:`p`, the weighted share of the winning label, is low;
    - the cell is far from every reference cell, as a cell type missing from the reference can
      be: its closeness :math:`c = \min(1, q / D)`, where :math:`D` is its mean distance to its
      neighbours and :math:`q` the 95th percentile of that distance among reference cells.

    The uncertainty is :math:`1 - c\,p`; cells above ``uncertainty_threshold`` are labelled
    ``"Unknown"``. As it is a product, doubts add up: with the default 0.5, a cell is Unknown
    when fewer than half of its neighbours' weight agrees, when it is more than twice as far
    from the reference as reference cells are from each other, or when both are partly so
    (e.g. a share of 0.7 at a closeness of 0.7).

    The latent space must be shared: the reference's latent and the query's mapped onto the
    same model (:func:`~sclatent.tl.map_query`), or an embedding computed on both together.

    A cell type that the reference lacks is labelled Unknown only when its cells land away from
    the reference's cells. That is not guaranteed: on Kang 2018, with the B cells removed from a
    reference of one donor, the other donor's B cells mapped next to the reference's T cells and
    few came out Unknown. Check the uncertainty, and the query's clusters, before trusting labels
    for cell types the reference may lack.

    Parameters
    ----------
    query
        Cells to label, with the latent in ``obsm[use_rep]``.
    reference
        Labelled cells, with the latent in ``obsm[use_rep]`` and the labels in ``obs[label_key]``.
    label_key
        Column of ``reference.obs`` with the labels (every cell labelled).
    use_rep
        The shared latent space.
    n_neighbors
        Reference neighbours that vote for each query cell.
    uncertainty_threshold
        Cells with a higher uncertainty (between 0 and 1) are labelled ``"Unknown"``; 1 labels every cell.
    key_added
        Column of ``query.obs`` for the labels, by default ``f"{label_key}_transferred"``; the
        uncertainty goes to ``f"{key_added}_uncertainty"``.
    random_state
        Seed of the sample of reference cells that sets the distance scale (more than 20,000 cells).
    copy
        Return a copy of ``query`` instead of writing to it.

    Returns
    -------
    ``None``, or a copy of ``query`` with ``copy=True``. Sets:

    ``query.obs[key_added]`` : :class:`pandas.Categorical`
        The transferred label, or ``"Unknown"``.
    ``query.obs[f'{key_added}_uncertainty']`` : :class:`numpy.ndarray`
        Between 0 (all neighbours agree, as close as reference cells are to each other) and 1.
    ``query.uns[key_added]`` : :class:`dict`
        The parameters, and the distance scales :math:`h` and :math:`q`.

    Examples
    --------
    >>> model = sl.tl.autoencode(reference, batch_key="batch", norm="layer", return_model=True)  # doctest: +SKIP
    >>> sl.tl.map_query(query, model)  # doctest: +SKIP
    >>> sl.tl.transfer_labels(query, reference, "cell_type")  # doctest: +SKIP
    >>> query.obs["cell_type_transferred"].value_counts()  # doctest: +SKIP
    """
    from sklearn.neighbors import NearestNeighbors

    labels = check_labels(reference, label_key, name="reference")
    if not isinstance(n_neighbors, int | np.integer) or not 1 <= n_neighbors < reference.n_obs:
        msg = f"n_neighbors must be an integer from 1 to {reference.n_obs - 1} (the reference's cells minus one), got {n_neighbors!r}; pass a smaller value."
        raise ValueError(msg)
    if not 0 < uncertainty_threshold <= 1:
        msg = f"uncertainty_threshold must be in (0, 1], got {uncertainty_threshold!r}; pass e.g. 0.5 (1 labels every cell)."
        raise ValueError(msg)
    ref = _embedding(reference, use_rep, "reference")
    qry = _embedding(query, use_rep, "query")
    if ref.shape[1] != qry.shape[1]:
        msg = f"the reference's {use_rep!r} has {ref.shape[1]} dimensions and the query's {qry.shape[1]}; pass latents of the same model (e.g. `sl.tl.map_query(query, model)`)."
        raise ValueError(msg)
    key_added = key_added or f"{label_key}_transferred"
    uncertainty_key = f"{key_added}_uncertainty"
    if copy:
        query = query.copy()
    ours = isinstance(query.uns.get(key_added), dict) and "transfer_labels" in query.uns[key_added]
    for key in (key_added, uncertainty_key):
        if key in query.obs and not ours:
            msg = f"query.obs already has a column {key!r} that transfer_labels did not write; pass another `key_added` so that it is kept."
            raise ValueError(msg)
    if key_added in query.obs:
        warnings.warn(
            f"overwriting query.obs[{key_added!r}] from an earlier transfer_labels; pass another `key_added` to keep both.",
            UserWarning,
            stacklevel=2,
        )

    start = logg.info(f"transferring {label_key!r} from {reference.n_obs} reference cells to {query.n_obs} query cells")
    nn = NearestNeighbors(n_neighbors=n_neighbors).fit(ref)
    rng = np.random.default_rng(random_state)
    sample = ref if ref.shape[0] <= _N_SCALE_CELLS else ref[rng.choice(ref.shape[0], _N_SCALE_CELLS, replace=False)]
    dist_ref, _ = nn.kneighbors(sample, n_neighbors=n_neighbors + 1)  # the first neighbour is the cell itself
    h = float(np.median(dist_ref[:, -1])) or 1.0
    q = float(np.quantile(dist_ref[:, 1:].mean(axis=1), 0.95)) or 1.0

    dist, idx = nn.kneighbors(qry)
    # relative to the nearest neighbour, so that the weights of a far cell do not all underflow to 0
    weights = np.exp(-((dist**2 - dist[:, :1] ** 2) / h**2))
    weights = weights / np.maximum(weights.sum(axis=1, keepdims=True), np.finfo(float).tiny)
    codes = pd.Categorical(labels.astype(str))
    names = np.asarray(codes.categories)
    votes = np.zeros((qry.shape[0], len(names)))
    np.add.at(votes, (np.repeat(np.arange(qry.shape[0]), n_neighbors), codes.codes[idx].ravel()), weights.ravel())
    share = votes.max(axis=1)
    closeness = np.minimum(1.0, q / np.maximum(dist.mean(axis=1), np.finfo(float).tiny))
    uncertainty = np.clip(1.0 - closeness * share, 0.0, 1.0)
    predicted = np.where(uncertainty > uncertainty_threshold, UNKNOWN, names[votes.argmax(axis=1)])
    categories = [*names, *([UNKNOWN] if UNKNOWN not in names else [])]

    query.obs[key_added] = pd.Categorical(predicted, categories=categories)
    query.obs[uncertainty_key] = uncertainty
    query.uns[key_added] = {
        "transfer_labels": {
            "label_key": label_key,
            "use_rep": use_rep,
            "n_neighbors": int(n_neighbors),
            "uncertainty_threshold": float(uncertainty_threshold),
            "kernel_width": h,
            "distance_95th_percentile": q,
        }
    }
    logg.info(
        "    finished",
        time=start,
        deep=f"added\n    '{key_added}', the labels (adata.obs)\n    '{uncertainty_key}', the uncertainty (adata.obs)",
    )
    return query if copy else None
