"""Score several embeddings side by side with scIB's metrics (through the optional ``scib-metrics``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scanpy as sc
from scanpy import logging as logg

from ..models._setup import MIN_CELLS, check_values, layer_names
from ._neighbors import require_rep

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

BIO = "bio conservation"
BATCH = "batch correction"
AGGREGATE = "aggregate"
BIO_METRICS = ("Leiden NMI", "Leiden ARI", "silhouette label", "cLISI")
BATCH_METRICS = ("iLISI", "kBET", "graph connectivity", "silhouette batch")
BIO_WEIGHT = 0.6


def _import_scib_metrics():
    try:
        import scib_metrics
    except ImportError as err:
        msg = (
            "sl.tl.compare_embeddings needs the optional package scib-metrics; "
            "install it with `pip install 'sclatent[metrics]'`."
        )
        raise ImportError(msg) from err
    return scib_metrics


def _labels(adata: AnnData, key: str, what: str) -> np.ndarray:
    if key not in adata.obs:
        msg = f"{what} {key!r} is not a column of adata.obs; pass one of {list(adata.obs.columns)}."
        raise KeyError(msg)
    values = adata.obs[key]
    if values.isna().any():
        msg = f"adata.obs[{key!r}] has {int(values.isna().sum())} missing values; subset to labelled cells first."
        raise ValueError(msg)
    codes = pd.Categorical(values.astype(str)).codes
    if len(np.unique(codes)) < 2:
        msg = f"adata.obs[{key!r}] has a single category; {what} needs at least two to score anything. Pass a column with two or more groups."
        raise ValueError(msg)
    return codes


def _pca_baseline(adata: AnnData, *, layer: str | None, n_comps: int, random_state: int) -> None:
    """``obsm['X_pca']`` from log-normalised counts (of ``layer`` or X), computed on a copy."""
    if layer is not None and layer not in adata.layers:
        msg = f"layer {layer!r} not found; pass one of {layer_names(adata)} or `layer=None` for adata.X."
        raise KeyError(msg)
    data = adata.layers[layer] if layer is not None else adata.X
    try:
        check_values(data, layer=layer, counts=True)
    except ValueError as err:
        msg = (
            f"the PCA baseline is computed from raw counts, but {err} "
            "Pass the counts with `layer=`, compute `adata.obsm['X_pca']` yourself, or set `pca=False`."
        )
        raise ValueError(msg) from err
    tmp = sc.AnnData(X=data.copy())
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    n_comps = min(n_comps, tmp.n_obs - 1, tmp.n_vars - 1)
    sc.pp.pca(tmp, n_comps=n_comps, random_state=random_state)
    adata.obsm["X_pca"] = tmp.obsm["X_pca"]


def _scores(
    scib_metrics, X: np.ndarray, labels: np.ndarray, batches: np.ndarray | None, *, n_jobs: int, random_state: int
):
    n_neighbors = min(90, X.shape[0] - 1)
    nn = scib_metrics.nearest_neighbors.pynndescent(
        X, n_neighbors=n_neighbors, random_state=random_state, n_jobs=n_jobs
    )
    nn15, nn50 = nn.subset_neighbors(min(15, n_neighbors)), nn.subset_neighbors(min(50, n_neighbors))
    clusters = scib_metrics.nmi_ari_cluster_labels_leiden(nn15, labels, optimize_resolution=True, n_jobs=n_jobs)
    scores = {
        "Leiden NMI": clusters["nmi"],
        "Leiden ARI": clusters["ari"],
        "silhouette label": scib_metrics.silhouette_label(X, labels),
        "cLISI": scib_metrics.clisi_knn(nn, labels),
    }
    if batches is not None:
        scores |= {
            "iLISI": scib_metrics.ilisi_knn(nn, batches),
            "kBET": scib_metrics.kbet_per_label(nn50, batches, labels),
            "graph connectivity": scib_metrics.graph_connectivity(nn15, labels),
            "silhouette batch": scib_metrics.silhouette_batch(X, labels, batches),
        }
    return {k: float(v) for k, v in scores.items()}


def compare_embeddings(
    adata: AnnData,
    keys: Sequence[str] = ("X_sclatent",),
    *,
    label_key: str,
    batch_key: str | None = None,
    pca: bool = True,
    layer: str | None = None,
    n_comps: int = 50,
    n_jobs: int = 1,
    random_state: int = 0,
    key_added: str = "sclatent_compare",
) -> pd.DataFrame:
    """Score embeddings side by side with the metrics of the scIB benchmark.

    Each embedding in ``obsm`` gets the scores of :mod:`scib_metrics` (an optional
    dependency: ``pip install 'sclatent[metrics]'``), computed on its own 90-nearest-neighbour
    graph, as scIB does. All scores are between 0 and 1, higher is better.

    - Biological conservation, against ``label_key``: NMI and ARI of Leiden clusters (the
      best NMI over resolutions 0.2 to 2.0), the label silhouette, and cLISI.
    - Batch correction, when ``batch_key`` is given: iLISI, kBET (per label), graph
      connectivity and the batch silhouette (within labels).
    - The aggregate, as scIB: ``0.6 × bio + 0.4 × batch`` (each the mean of its scores); just
      the bio score without ``batch_key``.

    Scores are not min-max scaled across embeddings, so they do not change when an embedding is
    added; they can be compared with other runs on the same data. The silhouettes compare all
    pairs of cells, so above some 50,000 cells score a random subset (e.g. ``adata[idx]``).

    Parameters
    ----------
    adata
        Annotated data matrix with the embeddings in ``obsm``.
    keys
        Keys of ``obsm`` to score, e.g. ``["X_sclatent", "X_scVI", "X_pca_harmony"]``.
    label_key
        Column of ``obs`` with the cell types (the biology to keep).
    batch_key
        Column of ``obs`` with the batches (the technical variation to remove).
    pca
        Add the PCA baseline as ``"X_pca"``: the existing ``obsm['X_pca']``, or, when there is
        none, PCA of log-normalised counts (from ``layer`` or X, which must then hold counts)
        written to ``obsm['X_pca']``.
    layer
        Layer with raw counts for the PCA baseline; ``None`` uses X.
    n_comps
        Principal components of the PCA baseline.
    n_jobs
        Parallel jobs for the neighbour search and the resolution sweep.
    random_state
        Seed of the neighbour search and PCA.
    key_added
        Where to store the results in ``uns``.

    Returns
    -------
    A tidy :class:`~pandas.DataFrame` with one row per embedding and metric, and columns
    ``embedding``, ``category`` (``"bio conservation"``, ``"batch correction"`` or
    ``"aggregate"``), ``metric`` and ``value``. Also stored as ``adata.uns[key_added]['results']``
    with the parameters in ``adata.uns[key_added]['params']``. ``adata.obsm['X_pca']`` is added
    when the PCA baseline was computed here.

    Examples
    --------
    >>> import sclatent as sl
    >>> sl.tl.autoencode(adata, batch_key="batch")  # doctest: +SKIP
    >>> sl.tl.compare_embeddings(adata, ["X_sclatent"], label_key="cell_type", batch_key="batch")  # doctest: +SKIP
    """
    scib_metrics = _import_scib_metrics()  # fail before any work when the extra is missing
    keys = list(dict.fromkeys([keys] if isinstance(keys, str) else keys))
    for key in keys:
        require_rep(adata, key)
    labels = _labels(adata, label_key, "label_key")
    batches = _labels(adata, batch_key, "batch_key") if batch_key is not None else None
    if adata.n_obs < MIN_CELLS:
        msg = f"compare_embeddings needs at least {MIN_CELLS} cells; got {adata.n_obs}. Pass more cells."
        raise ValueError(msg)
    if pca and "X_pca" not in keys:
        if "X_pca" not in adata.obsm:
            _pca_baseline(adata, layer=layer, n_comps=n_comps, random_state=random_state)
        keys.append("X_pca")
    for key in keys:  # a user's own X_pca included
        if not np.isfinite(np.asarray(adata.obsm[key])).all():
            msg = f"adata.obsm[{key!r}] has NaN or infinite values; compute it again or leave it out of `keys`."
            raise ValueError(msg)

    start = logg.info(f"scoring {len(keys)} embeddings with scib-metrics")
    rows = []
    for key in keys:
        X = np.ascontiguousarray(np.asarray(adata.obsm[key], dtype=np.float32))
        scores = _scores(scib_metrics, X, labels, batches, n_jobs=n_jobs, random_state=random_state)
        bio = float(np.mean([scores[m] for m in BIO_METRICS]))
        rows += [(key, BIO, m, scores[m]) for m in BIO_METRICS]
        rows.append((key, AGGREGATE, "bio conservation", bio))
        if batches is not None:
            batch = float(np.mean([scores[m] for m in BATCH_METRICS]))
            rows += [(key, BATCH, m, scores[m]) for m in BATCH_METRICS]
            rows.append((key, AGGREGATE, "batch correction", batch))
            total = BIO_WEIGHT * bio + (1 - BIO_WEIGHT) * batch
        else:
            total = bio
        rows.append((key, AGGREGATE, "total", total))
    df = pd.DataFrame(rows, columns=["embedding", "category", "metric", "value"])
    adata.uns[key_added] = {
        "results": df,
        "params": {"keys": keys, "label_key": label_key, "batch_key": batch_key, "random_state": random_state},
    }
    logg.info("    done", time=start, deep=f"added\n    {key_added!r}, the scores (adata.uns)")
    return df
