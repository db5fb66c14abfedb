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
#: Cells whose expression is averaged (a cell and its nearest neighbours of the same data) for the expression match.
_N_SMOOTH = 10
#: Query cells scored at a time by the expression match (two dense cells × genes blocks).
_CHUNK = 4096


def _neighbour_mean(X, idx: np.ndarray) -> np.ndarray:
    """Return the mean of rows ``idx`` (cells × k positions) of ``X`` (sparse or dense), dense, one row per cell."""
    import scipy.sparse as sp

    m, k = idx.shape
    weights = sp.csr_matrix(
        (np.full(m * k, 1.0 / k, dtype=np.float32), idx.ravel(), np.arange(0, m * k + 1, k)), shape=(m, X.shape[0])
    )
    mean = weights @ X
    return np.asarray(mean.todense() if sp.issparse(mean) else mean)


def _gene_scale(X) -> tuple[np.ndarray, np.ndarray]:
    """Each gene's mean and standard deviation (plus 0.001) over the cells of ``X`` (sparse or dense)."""
    import scipy.sparse as sp
    from sklearn.utils.sparsefuncs import mean_variance_axis

    mu, var = mean_variance_axis(X, axis=0) if sp.issparse(X) else (X.mean(axis=0), X.var(axis=0))
    return np.asarray(mu), np.sqrt(np.asarray(var)) + 1e-3


def _match(cells: np.ndarray, neighbours: np.ndarray, own: tuple, theirs: tuple) -> np.ndarray:
    """Correlation between each cell's profile and its neighbours' mean, each standardised gene by gene by its own data."""
    a, b = (cells - own[0]) / own[1], (neighbours - theirs[0]) / theirs[1]
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    return (a * b).sum(axis=1) / np.sqrt((a**2).sum(axis=1) * (b**2).sum(axis=1) + 1e-12)


def _expression_match(query, reference, qry, ref, idx, n_neighbors: int, layer, rng) -> np.ndarray:
    """Return each query cell's expression match as a percentile of reference cells' (0: matches worse than every one).

    A query cell's log-normalised expression, averaged with its nearest query cells in the latent,
    is correlated with the mean expression of the reference neighbours it was matched to (genes
    standardised by the reference). Reference cells are scored the same way, half against the
    other half of a sample, so that neither side shares cells: their scores are what a matched
    cell looks like.
    """
    from sklearn.neighbors import NearestNeighbors

    from ._classify import _log_normalised

    genes = reference.var_names.intersection(query.var_names, sort=False)
    if len(genes) < 2:
        msg = "the query and the reference share fewer than 2 genes, so their expression cannot be compared; pass AnnData with the same gene names, or novelty_quantile=None."
        raise ValueError(msg)

    def counts(adata):
        sub = adata[:, genes]
        return _log_normalised(sub.X if layer is None else sub.layers[layer])

    R, Q = counts(reference), counts(query)
    ref_scale, query_scale = _gene_scale(R), _gene_scale(Q)  # a gene's shift between the data sets cancels

    sample = rng.permutation(ref.shape[0])[:_N_SCALE_CELLS]
    half_a, half_b = sample[: len(sample) // 2], sample[len(sample) // 2 :]
    smooth_a = NearestNeighbors(n_neighbors=min(_N_SMOOTH, len(half_a))).fit(ref[half_a]).kneighbors(ref[half_a])[1]
    match_b = NearestNeighbors(n_neighbors=min(n_neighbors, len(half_b))).fit(ref[half_b]).kneighbors(ref[half_a])[1]
    calibration = np.sort(
        np.concatenate(
            [
                _match(
                    _neighbour_mean(R, half_a[smooth_a[c]]),
                    _neighbour_mean(R, half_b[match_b[c]]),
                    ref_scale,
                    ref_scale,
                )
                for c in (slice(s, s + _CHUNK) for s in range(0, len(half_a), _CHUNK))
            ]
        )
    )

    smooth_q = NearestNeighbors(n_neighbors=min(_N_SMOOTH, qry.shape[0])).fit(qry).kneighbors(qry)[1]
    percentile = np.empty(qry.shape[0])
    for s in range(0, qry.shape[0], _CHUNK):
        part = slice(s, s + _CHUNK)
        score = _match(_neighbour_mean(Q, smooth_q[part]), _neighbour_mean(R, idx[part]), query_scale, ref_scale)
        percentile[part] = np.searchsorted(calibration, score, side="right") / len(calibration)
    return percentile


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
    novelty_quantile: float | None = None,
    layer: str | None = None,
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

    A cell type that the reference lacks need not land away from the reference's cells: on Kang
    2018, with the B cells removed from a reference of one donor, the other donor's B cells mapped
    next to the reference's T cells, and the uncertainty above flagged 1 % of them. So an optional
    third test compares expression, not the latent: the **expression match**. Each query cell's
    log-normalised counts, averaged with its 9 nearest query cells in the latent, are correlated
    with the mean of the reference neighbours it was matched to (each side's genes standardised
    by its own data, so that a gene's overall shift between the data sets cancels). Reference
    cells are scored the same way, one half of them against the other. A query cell whose match
    is lower than that of all but ``novelty_quantile`` of the reference cells is labelled
    ``"Unknown"`` too. It needs the counts of both (``layer``) and shared gene names.

    It is off by default, because its false alarms depend on the data. With
    ``novelty_quantile=0.05`` it flagged 63 % of the query's B cells on Kang 2018 (B cells
    removed from the reference) and 2 % of the other cells; none of
    the cells of a CellBench query from another technology; but 29 % of the cells of a CellBench
    query from another plate, whose expression matched the reference's systematically less
    well. Look at ``obs[f"{key_added}_expression_match"]`` per cluster before trusting it.

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
        Cells with a higher uncertainty (between 0 and 1) are labelled ``"Unknown"``; 1 (with
        ``novelty_quantile=None``) labels every cell.
    novelty_quantile
        Cells whose expression match is below this quantile of the reference cells' are labelled
        ``"Unknown"`` (e.g. 0.05); ``None`` (the default) turns the expression match off.
    layer
        Layer of both with the counts for the expression match; ``None`` means ``X``.
    key_added
        Column of ``query.obs`` for the labels, by default ``f"{label_key}_transferred"``; the
        uncertainty goes to ``f"{key_added}_uncertainty"``.
    random_state
        Seed of the sample of reference cells that sets the distance scale (more than 20,000
        cells), and of the reference cells that calibrate the expression match.
    copy
        Return a copy of ``query`` instead of writing to it.

    Returns
    -------
    ``None``, or a copy of ``query`` with ``copy=True``. Sets:

    ``query.obs[key_added]`` : :class:`pandas.Categorical`
        The transferred label, or ``"Unknown"``.
    ``query.obs[f'{key_added}_uncertainty']`` : :class:`numpy.ndarray`
        Between 0 (all neighbours agree, as close as reference cells are to each other) and 1.
    ``query.obs[f'{key_added}_expression_match']`` : :class:`numpy.ndarray`
        The expression match as the share of reference cells that match worse or equally (0 to 1), unless
        ``novelty_quantile=None``.
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
    if novelty_quantile is not None and not 0 < novelty_quantile < 1:
        msg = f"novelty_quantile must be in (0, 1) or None, got {novelty_quantile!r}; pass e.g. 0.05, or None to turn the expression match off."
        raise ValueError(msg)
    if novelty_quantile is not None:
        if len(reference.var_names.intersection(query.var_names)) < 2:
            msg = "the query and the reference share fewer than 2 genes, so their expression cannot be compared; pass AnnData with the same gene names, or novelty_quantile=None."
            raise ValueError(msg)
        for adata, which in ((reference, "reference"), (query, "query")):
            if layer is not None and layer not in adata.layers:
                msg = f"layer {layer!r} is not in {which}.layers (it has {list(adata.layers)}); pass the layer with the counts, or novelty_quantile=None."
                raise KeyError(msg)
            if layer is None and adata.X is None:
                msg = f"{which}.X is empty; pass the layer with the counts as `layer=`, or novelty_quantile=None."
                raise ValueError(msg)
    ref = _embedding(reference, use_rep, "reference")
    qry = _embedding(query, use_rep, "query")
    if ref.shape[1] != qry.shape[1]:
        msg = f"the reference's {use_rep!r} has {ref.shape[1]} dimensions and the query's {qry.shape[1]}; pass latents of the same model (e.g. `sl.tl.map_query(query, model)`)."
        raise ValueError(msg)
    key_added = key_added or f"{label_key}_transferred"
    uncertainty_key = f"{key_added}_uncertainty"
    match_key = f"{key_added}_expression_match"
    if copy:
        query = query.copy()
    ours = isinstance(query.uns.get(key_added), dict) and "transfer_labels" in query.uns[key_added]
    for key in (key_added, uncertainty_key, match_key):
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
    unknown = uncertainty > uncertainty_threshold
    if novelty_quantile is not None:
        match = _expression_match(query, reference, qry, ref, idx, n_neighbors, layer, rng)
        unknown |= match < novelty_quantile
    predicted = np.where(unknown, UNKNOWN, names[votes.argmax(axis=1)])
    categories = [*names, *([UNKNOWN] if UNKNOWN not in names else [])]

    query.obs[key_added] = pd.Categorical(predicted, categories=categories)
    query.obs[uncertainty_key] = uncertainty
    if novelty_quantile is not None:
        query.obs[match_key] = match
    elif match_key in query.obs:
        del query.obs[match_key]  # from an earlier run of ours, which would no longer match the labels
    query.uns[key_added] = {
        "transfer_labels": {
            "label_key": label_key,
            "use_rep": use_rep,
            "n_neighbors": int(n_neighbors),
            "uncertainty_threshold": float(uncertainty_threshold),
            "novelty_quantile": None if novelty_quantile is None else float(novelty_quantile),
            "layer": layer,
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
