"""Classify cells with cross-validation that keeps donors apart, next to a simple baseline in the same folds."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scanpy import logging as logg

from ..models._setup import check_labels
from ._autoencode import _versions

if TYPE_CHECKING:
    from anndata import AnnData

    from ..models import Autoencoder, Classifier

#: The metrics of every fold and of the hold-out, for the classifier and the baseline.
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc", "ece")
#: Principal components of the baseline (logistic regression on PCA of log-normalised counts).
BASELINE_COMPONENTS = 50


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, n_bins: int = 15) -> float:
    """Return the expected calibration error: the gap between confidence and accuracy, averaged over confidence bins."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    gap = 0.0
    for b in np.unique(bins):
        inside = bins == b
        gap += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(gap)


def scores(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro-F1, one-vs-rest AUROC (mean over the classes present) and ECE."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

    predicted = proba.argmax(axis=1)
    present = np.unique(y)
    aurocs = [roc_auc_score(y == c, proba[:, c]) for c in present] if len(present) > 1 else [np.nan]
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(y, predicted)),
        "macro_f1": float(f1_score(y, predicted, labels=present, average="macro")),
        "auroc": float(np.mean(aurocs)),
        "ece": expected_calibration_error(y, proba),
    }


def _log_normalised(X):
    """``log1p`` of counts per 10,000, with scanpy's own functions (sparse data stay sparse)."""
    import scanpy as sc

    tmp = sc.AnnData(X=X.astype(np.float32))  # a copy: the user's matrix is left as it is
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    return tmp.X


def baseline_proba(X_train, y_train: np.ndarray, X_test, n_classes: int, random_state: int) -> np.ndarray:
    """Return the probabilities of the baseline: logistic regression on PCA of log-normalised counts.

    Fitted on the training cells alone (PCA included); sparse data stay sparse (PCA with ARPACK).
    """
    import scipy.sparse as sp
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    train, test = _log_normalised(X_train), _log_normalised(X_test)
    n_comps = min(BASELINE_COMPONENTS, train.shape[0] - 1, train.shape[1] - 1)
    pca = PCA(n_comps, svd_solver="arpack" if sp.issparse(train) else "auto", random_state=random_state).fit(train)
    model = LogisticRegression(max_iter=2000).fit(pca.transform(train), y_train)
    proba = np.zeros((test.shape[0], n_classes))
    proba[:, model.classes_] = model.predict_proba(pca.transform(test))
    return proba


def _holdout_mask(adata: AnnData, holdout: dict | None) -> np.ndarray:
    mask = np.zeros(adata.n_obs, dtype=bool)
    for key, values in (holdout or {}).items():
        if key not in adata.obs:
            msg = f"holdout names {key!r}, which is not a column of adata.obs; pass e.g. holdout={{'donor': ['d1']}} with an existing column."
            raise KeyError(msg)
        values = [str(v) for v in ([values] if isinstance(values, str) else values)]
        column = adata.obs[key].astype(str)
        unknown = sorted(set(values) - set(column))
        if unknown:
            msg = (
                f"holdout values {unknown} are not in adata.obs[{key!r}]; pick values from {sorted(set(column))[:10]}."
            )
            raise ValueError(msg)
        mask |= column.isin(values).to_numpy()
    if holdout and mask.all():
        msg = "the holdout takes every cell, leaving none to train on; hold out fewer cells."
        raise ValueError(msg)
    return mask


def _folds(labels: np.ndarray, groups: np.ndarray | None, n_splits: int, random_state: int):
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is None:
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
        return list(splitter.split(np.zeros(len(labels)), labels))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    return list(splitter.split(np.zeros(len(labels)), labels, groups))


def _check_rep(adata: AnnData, use_rep: str | None, autoencoder, layer: str | None) -> None:
    """Raise unless ``use_rep`` (when given) is ``autoencoder``'s latent of ``adata``'s cells."""
    from ..models._classifier import check_autoencoder

    check_autoencoder(autoencoder, layer)
    if use_rep is None:
        return
    if autoencoder is None:
        msg = (
            f"use_rep={use_rep!r} needs the autoencoder that made it, so that the classifier computes the latent "
            f"from the counts and attributions stay per gene; pass autoencoder=model, from "
            f"`model = sl.tl.autoencode(adata, return_model=True)`."
        )
        raise ValueError(msg)
    if use_rep not in adata.obsm:
        msg = f"use_rep={use_rep!r} is not in adata.obsm (it has {list(adata.obsm)}); run `sl.tl.autoencode` first or pass the key it wrote."
        raise KeyError(msg)
    n = min(adata.n_obs, 256)
    rep = np.asarray(adata.obsm[use_rep][:n], dtype=np.float64)
    latent = autoencoder.get_latent(adata[:n]).astype(np.float64)
    if rep.shape != latent.shape or not np.allclose(rep, latent, atol=1e-3 * max(np.abs(latent).max(), 1.0)):
        msg = (
            f"adata.obsm[{use_rep!r}] is not this autoencoder's latent of these cells; pass the autoencoder that "
            f"wrote it (`return_model=True`), or write its latent again with `adata.obsm[{use_rep!r}] = model.get_latent(adata)`."
        )
        raise ValueError(msg)


def classify(
    adata: AnnData,
    label_key: str,
    *,
    layer: str | None = None,
    use_rep: str | None = None,
    autoencoder: Autoencoder | None = None,
    groups_key: str | None = None,
    n_splits: int = 5,
    holdout: dict[str, list] | None = None,
    baseline: bool = True,
    n_hidden: int = 128,
    n_layers: int = 1,
    dropout_rate: float = 0.2,
    max_epochs: int | None = None,
    learning_rate: float = 1e-3,
    key_added: str = "sclatent_classify",
    random_state: int = 0,
    progress_bar: bool = False,
    return_model: bool = False,
) -> Classifier | None:
    """Classify cells (cell type, condition, …) from their counts with cross-validation, next to a baseline.

    A :class:`~sclatent.models.Classifier` (an MLP on the raw counts of ``layer``, log-normalised
    inside the model) is trained in each of ``n_splits`` stratified folds; with ``groups_key``
    the folds are grouped, so that no group (donor) is in both the training and the test cells
    of a fold. Within each fold, early stopping and the temperature that calibrates the
    probabilities use held-out training cells: whole groups when there are at least two and
    holding one out keeps every class in training, else random cells (a warning says so, and
    ``uns[key_added]['validation']`` records which, fold by fold). The baseline, logistic
    regression on 50 principal components of log-normalised counts, is trained and scored in
    the same folds.

    With ``autoencoder=`` (and ``use_rep``, the key of its latent in ``obsm``) the classifier
    reads the autoencoder's latent instead of the counts: a frozen copy of its encoder computes
    the latent from the raw counts inside the classifier, so that predictions of new data need
    only their counts and :func:`~sclatent.tl.attribute` runs through the encoder to the genes.
    The autoencoder never saw the labels, but it was trained on every cell it was given, test
    folds and hold-out included; for a strict hold-out, train it without those cells and map
    them with :func:`~sclatent.tl.map_query` or encode them with ``model.get_latent``.

    ``holdout`` (e.g. ``{"donor": ["d7"]}``) sets cells aside before anything else: they are
    never used for training, early stopping or any choice, and are scored once at the end by
    a classifier (and a baseline) trained on all the other cells.

    Parameters
    ----------
    adata
        Cells × genes with raw counts, e.g. the highly variable genes.
    label_key
        Column of ``adata.obs`` with the classes.
    layer
        Layer with the counts; ``None`` means ``adata.X`` (with ``autoencoder``, its own layer).
    use_rep
        Key of ``adata.obsm`` with the autoencoder's latent (e.g. ``"X_sclatent"``), to classify
        from it; checked, on the first 256 cells, to be that autoencoder's latent. Needs ``autoencoder``.
    autoencoder
        The trained :class:`~sclatent.models.Autoencoder` whose latent the classifier reads
        (``sl.tl.autoencode(adata, return_model=True)``).
    groups_key
        Column of ``adata.obs`` with groups to keep apart (donors, patients, plates).
    n_splits
        Folds of the cross-validation.
    holdout
        Columns of ``adata.obs`` and the values whose cells form the external hold-out.
    baseline
        Also train and score the baseline in the same folds (and on the hold-out).
    n_hidden, n_layers, dropout_rate
        The classifier's hidden layers.
    max_epochs, learning_rate
        Training, as for :meth:`Classifier.fit <sclatent.models.Classifier.fit>`.
    key_added
        Where the results go (see below).
    random_state
        Seed of the folds, the weights and the minibatches.
    progress_bar
        Show a progress bar for each training.
    return_model
        Return the classifier trained on all the cells outside the hold-out.

    Returns
    -------
    The classifier with ``return_model=True``, else ``None``. Sets:

    ``adata.obs[key_added]`` : :class:`pandas.Categorical`
        The predicted class: out of fold for the cross-validated cells, from the final
        classifier for the hold-out cells.
    ``adata.obsm[f'{key_added}_proba']`` : :class:`numpy.ndarray`
        The calibrated probabilities, cells × classes (in ``uns[key_added]['classes']``' order).
    ``adata.uns[key_added]`` : :class:`dict`
        ``folds`` (a tidy table: fold, method, metric, value), ``test_fold`` (the fold each cell
        is tested in; -1 for the hold-out), ``holdout`` (the metrics of the hold-out),
        ``confusion_matrix`` (out of fold, true classes in rows), ``holdout_confusion_matrix``
        (all zeros without a hold-out), ``validation`` (for each training, ``"groups"`` or
        ``"cells"``: what early stopping held out), ``classes``, ``params`` and ``versions``. Metrics: accuracy, balanced accuracy,
        macro-F1, one-vs-rest AUROC and expected calibration error (``ece``).

    Examples
    --------
    >>> sl.tl.classify(adata, "condition", groups_key="donor", holdout={"donor": ["d7"]})  # doctest: +SKIP
    >>> sl.pl.classify(adata)  # doctest: +SKIP
    """
    from sklearn.metrics import confusion_matrix

    from ..models import Classifier
    from ..models._classifier import ValidationTakesClassError
    from ..models._setup import DataSetup

    labels = check_labels(adata, label_key).to_numpy()
    is_holdout = _holdout_mask(adata, holdout)
    train_cells = np.flatnonzero(~is_holdout)
    classes = sorted(set(labels))
    lost = sorted(set(classes) - set(labels[train_cells]))
    if lost:
        msg = f"the holdout removes every cell of the classes {lost} from training; hold out other cells, or drop those classes first."
        raise ValueError(msg)
    if not isinstance(n_splits, int | np.integer) or n_splits < 2:
        msg = f"n_splits must be an integer ≥ 2, got {n_splits!r}."
        raise ValueError(msg)
    counts = pd.Series(labels[train_cells]).value_counts()
    if (counts < n_splits).any():
        small = counts[counts < n_splits].to_dict()
        msg = f"classes {small} have fewer training cells than n_splits={n_splits}; lower n_splits, or drop or merge those classes first."
        raise ValueError(msg)
    groups = None
    if groups_key is not None:
        groups = check_labels(adata, groups_key).to_numpy()
        n_groups = len(set(groups[train_cells]))
        if n_groups < n_splits:
            msg = f"groups_key={groups_key!r} has {n_groups} groups outside the holdout, fewer than n_splits={n_splits}; lower n_splits to at most {n_groups}, or use more groups."
            raise ValueError(msg)

    _check_rep(adata, use_rep, autoencoder, layer)
    setup = DataSetup.from_adata(adata, counts=True, layer=layer) if autoencoder is None else autoencoder.setup
    setup.read(adata)  # the counts (genes, covariates), checked before any training
    layer = setup.layer  # the baseline reads the same counts
    codes = pd.Categorical(labels, categories=classes).codes.astype(np.int64)
    folds = _folds(codes[train_cells], None if groups is None else groups[train_cells], n_splits, random_state)
    for fold, (tr, _) in enumerate(folds):
        n_train = np.bincount(codes[train_cells[tr]], minlength=len(classes))
        if (n_train < 2).any():
            few = [classes[c] for c in np.flatnonzero(n_train < 2)]
            msg = (
                f"fold {fold} would train on fewer than 2 cells of the classes {few}: grouped folds keep whole groups "
                f"together, and these classes are in few groups. Lower n_splits, or drop the classes found in fewer "
                f"than 2 groups of {groups_key!r}."
            )
            raise ValueError(msg)
    if key_added in adata.obs or key_added in adata.uns:
        warnings.warn(
            f"overwriting adata.obs[{key_added!r}] and uns[{key_added!r}] from an earlier run; pass another `key_added` to keep both.",
            UserWarning,
            stacklevel=2,
        )

    start = logg.info(f"classifying {label_key!r} ({len(classes)} classes), {n_splits}-fold cross-validation")
    settings = {
        "autoencoder": autoencoder,
        "n_hidden": n_hidden,
        "n_layers": n_layers,
        "dropout_rate": dropout_rate,
        "random_state": random_state,
    }
    fit_settings = {"max_epochs": max_epochs, "learning_rate": learning_rate, "progress_bar": progress_bar}
    proba = np.full((adata.n_obs, len(classes)), np.nan, dtype=np.float32)
    test_fold = np.full(adata.n_obs, -1, dtype=np.int64)
    rows = []

    validation: list[str] = []

    def train(cells: np.ndarray) -> Classifier:
        sub = adata[cells]
        inner = None if groups is None or len(set(groups[cells])) < 2 else groups[cells]
        clf = Classifier(sub, label_key, layer=None if autoencoder is not None else layer, **settings)
        if inner is not None:
            try:  # early stopping and calibration on whole held-out groups ...
                clf.fit(validation_groups=inner, **fit_settings)
                validation.append("groups")
                return clf
            except ValidationTakesClassError:  # ... unless that takes every training cell of a class
                logg.warning(
                    "    holding out a whole group for early stopping would take every cell of a class; "
                    "random cells are held out instead (calibration may then be optimistic)"
                )
        validation.append("cells")
        return clf.fit(**fit_settings)

    def matrix(cells: np.ndarray):
        X = adata.layers[layer] if layer is not None else adata.X
        return X[cells]

    for fold, (tr, te) in enumerate(folds):
        tr, te = train_cells[tr], train_cells[te]
        if groups is not None and set(groups[tr]) & set(groups[te]):  # never: the folds are grouped
            msg = f"fold {fold}: a group is both trained on and tested; check that groups_key names whole groups (e.g. donors), and report this with your data's group sizes."
            raise RuntimeError(msg)
        test_fold[te] = fold
        clf = train(tr)
        proba[te] = clf.predict_proba(adata[te]).reindex(columns=classes, fill_value=0.0).to_numpy()
        rows += [
            {"fold": fold, "method": "sclatent", "metric": k, "value": v}
            for k, v in scores(codes[te], proba[te]).items()
        ]
        if baseline:
            base = baseline_proba(matrix(tr), codes[tr], matrix(te), len(classes), random_state)
            rows += [
                {"fold": fold, "method": "baseline", "metric": k, "value": v}
                for k, v in scores(codes[te], base).items()
            ]
        logg.info(f"    fold {fold + 1} of {n_splits} done")

    model = train(train_cells) if (return_model or is_holdout.any()) else None
    holdout_rows, holdout_matrix = [], None
    if is_holdout.any():
        held = np.flatnonzero(is_holdout)
        proba[held] = model.predict_proba(adata[held]).reindex(columns=classes, fill_value=0.0).to_numpy()
        holdout_rows = [
            {"method": "sclatent", "metric": k, "value": v} for k, v in scores(codes[held], proba[held]).items()
        ]
        if baseline:
            base = baseline_proba(matrix(train_cells), codes[train_cells], matrix(held), len(classes), random_state)
            holdout_rows += [
                {"method": "baseline", "metric": k, "value": v} for k, v in scores(codes[held], base).items()
            ]
        holdout_matrix = confusion_matrix(codes[held], proba[held].argmax(axis=1), labels=range(len(classes)))

    predicted = proba.argmax(axis=1)
    adata.obs[key_added] = pd.Categorical.from_codes(predicted, categories=classes)
    adata.obsm[f"{key_added}_proba"] = proba
    adata.uns[key_added] = {
        "classes": classes,
        "folds": pd.DataFrame(rows),
        "test_fold": test_fold,
        "validation": validation,
        "holdout": pd.DataFrame(holdout_rows, columns=["method", "metric", "value"]),
        "confusion_matrix": confusion_matrix(codes[train_cells], predicted[train_cells], labels=range(len(classes))),
        "holdout_confusion_matrix": holdout_matrix
        if holdout_matrix is not None
        else np.zeros((len(classes), len(classes)), dtype=int),
        "params": {
            "label_key": label_key,
            "layer": layer,
            **({"use_rep": use_rep} if use_rep is not None else {}),
            "autoencoder": autoencoder is not None,
            "groups_key": groups_key,
            "n_splits": int(n_splits),
            "holdout": {
                k: [str(v) for v in ([vs] if isinstance(vs, str) else vs)] for k, vs in (holdout or {}).items()
            },
            "baseline": bool(baseline),
            "random_state": int(random_state),
            "learning_rate": float(learning_rate),
            **({"max_epochs": int(max_epochs)} if max_epochs is not None else {}),
            **{k: v for k, v in settings.items() if k not in ("random_state", "autoencoder")},
        },
        "versions": _versions(),
    }
    logg.info(
        "    finished",
        time=start,
        deep=(
            f"added\n    '{key_added}', predicted class (adata.obs)\n    '{key_added}_proba', probabilities (adata.obsm)\n"
            f"    '{key_added}', fold and hold-out metrics, confusion matrices (adata.uns)"
        ),
    )
    return model if return_model else None
