"""Gene attributions of a classifier's classes or of the autoencoder's latent dimensions, with captum."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from scanpy import logging as logg

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

    from ..models import Autoencoder, Classifier

#: captum's methods that :func:`attribute` offers.
METHODS = ("integrated_gradients", "input_x_gradient")
#: Relative convergence delta of integrated gradients above which :func:`attribute` warns.
MAX_RELATIVE_DELTA = 0.05


def _targets(model, target) -> list:
    from ..models import Classifier

    if isinstance(model, Classifier):
        known = list(model.classes)
        scalar = isinstance(target, str) or np.isscalar(target)
        targets = known if target is None else [target] if scalar else list(target)
        unknown = [t for t in targets if str(t) not in known]
        if unknown:
            msg = f"target {unknown} is not a class of the classifier; pass classes from {known}."
            raise ValueError(msg)
        return [str(t) for t in targets]
    n = model.config.n_latent
    targets = list(range(n)) if target is None else [target] if isinstance(target, int | np.integer) else list(target)
    if any(not isinstance(t, int | np.integer) or not 0 <= t < n for t in targets):
        msg = f"targets of an autoencoder are latent dimensions, integers from 0 to {n - 1}; got {target!r}. Pass e.g. target=0."
        raise ValueError(msg)
    return [int(t) for t in targets]


def _forward(model, target_index: int):
    """Return f(h, cov) → the explained output of each cell from the model's own per-gene input ``h``."""
    import torch

    from ..models import Classifier

    if isinstance(model, Classifier):

        def f(h, cov):
            return torch.log_softmax(model.module.logits_from_input(h, cov), dim=-1)[:, target_index]

        return f

    def g(h, cov):
        return model.module.latent(model.module.encode_input(h, cov)[0])[:, target_index]

    return g


def _model_input(model, batch: dict):
    from ..models import Classifier

    if isinstance(model, Classifier):
        return model.module.model_input(batch["x"], batch["library"])
    return model.module.encoder_input(batch["x"], batch["library"])


def attribute(
    adata: AnnData,
    model: Classifier | Autoencoder,
    *,
    target: str | int | Sequence | None = None,
    method: Literal["integrated_gradients", "input_x_gradient"] = "integrated_gradients",
    baseline: Literal["zeros", "mean"] = "zeros",
    n_steps: int = 50,
    groupby: str | None = None,
    batch_size: int = 64,
    key_added: str = "sclatent_attribute",
) -> None:
    r"""Rank genes by their attribution to a classifier's class or an autoencoder's latent dimension (captum).

    For a :class:`~sclatent.models.Classifier`, the explained output is the log-probability of
    the target class; for an :class:`~sclatent.models.Autoencoder`, the latent (as written to ``obsm``) of the
    target latent dimension, each cell with its own covariates. Attributions are to the model's
    own input, which both models compute per gene from the raw data: for a classifier ``log1p``
    of counts per 10,000 (for one that reads an autoencoder's latent, the attribution runs
    through that encoder to what it sees); for an autoencoder what its encoder sees (the same with
    ``normalize_input=True``, ``log1p`` of the raw counts without it, the values themselves with
    the gaussian likelihood). So they are per gene. A gene's score is its mean attribution over the cells explained: positive when
    it pushes towards the target.

    Integrated gradients integrate the gradient from a baseline (``"zeros"``: no expression;
    ``"mean"``: the mean input over ``adata``'s cells) to each cell in ``n_steps`` steps. Its convergence
    delta (how far the attributions' sum is from the change of the output) is reported, relative
    to that change; above 5 % a warning says to raise ``n_steps``.

    Parameters
    ----------
    adata
        Cells × genes with raw counts (genes matched to the model's by name).
    model
        A trained classifier or autoencoder.
    target
        Classes (classifier) or latent dimensions (autoencoder); ``None`` means all.
    method
        ``"integrated_gradients"`` or ``"input_x_gradient"`` (gradient times input, one step).
    baseline
        The reference input of integrated gradients.
    n_steps
        Steps of integrated gradients.
    groupby
        A column of ``adata.obs``: for a classifier, each class is explained on the cells of
        the group named like it (e.g. the cell type the classifier was trained on); else on all cells.
    batch_size
        Cells per pass (times ``n_steps`` rows for integrated gradients).
    key_added
        ``adata.uns[key_added]`` gets the results.

    Returns
    -------
    ``None``. Sets ``adata.uns[key_added]``, a :class:`dict` with

    ``results`` : :class:`pandas.DataFrame`
        A tidy table, as :func:`scanpy.get.rank_genes_groups_df` gives: ``target``, ``gene``,
        ``score`` (mean attribution), ``rank`` (1 is the highest score), for every gene and target.
    ``convergence`` : :class:`pandas.DataFrame`
        Per target: the cells explained and the mean absolute convergence delta, also relative
        to the mean absolute change of the output (integrated gradients only).
    ``params`` : :class:`dict`
        The arguments.

    Examples
    --------
    >>> clf = sl.models.Classifier(adata, "cell_type").fit()  # doctest: +SKIP
    >>> sl.tl.attribute(adata, clf, groupby="cell_type")  # doctest: +SKIP
    >>> sl.pl.attribute(adata)  # doctest: +SKIP
    """
    try:
        from captum.attr import InputXGradient, IntegratedGradients
    except ImportError:
        msg = "sl.tl.attribute needs captum; install it with `pip install 'sclatent[attribute]'` (or `pip install captum`)."
        raise ImportError(msg) from None
    import torch

    from ..models import Classifier
    from ..train import CellData

    if method not in METHODS:
        msg = f"method must be one of {list(METHODS)}, got {method!r}; pass one of them."
        raise ValueError(msg)
    if baseline not in ("zeros", "mean"):
        msg = f"baseline must be 'zeros' or 'mean', got {baseline!r}; pass one of them."
        raise ValueError(msg)
    if not isinstance(n_steps, int | np.integer) or n_steps < 2:
        msg = f"n_steps must be an integer ≥ 2, got {n_steps!r}."
        raise ValueError(msg)
    if not getattr(model, "is_trained", False):
        msg = "the model is not trained; train it first (`model.fit()`)."
        raise ValueError(msg)
    is_classifier = isinstance(model, Classifier)
    if not is_classifier:
        model.check_latent_axes()
    targets = _targets(model, target)
    cells_of: dict = {}
    if groupby is not None:
        if groupby not in adata.obs:
            msg = f"groupby={groupby!r} is not a column of adata.obs; pass an existing column, e.g. the classifier's label_key."
            raise KeyError(msg)
        groups = adata.obs[groupby].astype(str).to_numpy()
        if is_classifier:
            absent = [t for t in targets if t not in set(groups)]
            if absent:
                msg = f"classes {absent} have no cells in adata.obs[{groupby!r}]; pass targets that name groups, or groupby=None to explain them on all cells."
                raise ValueError(msg)
            cells_of = {t: np.flatnonzero(groups == t) for t in targets}
    X, library, cat, cont = model.setup.read(adata)  # genes by name, values checked, before any work
    data = CellData(X, library, cat, cont)
    all_cells = np.arange(adata.n_obs)
    mean_cell = None
    if baseline == "mean":  # the mean of the model's input over the cells
        with torch.no_grad():
            mean_cell = sum(
                _model_input(model, data[all_cells[s : s + 4096]]).sum(0, keepdim=True)
                for s in range(0, adata.n_obs, 4096)
            ) / max(adata.n_obs, 1)

    start = logg.info(f"attributing {len(targets)} targets to {len(model.setup.var_names)} genes ({method})")
    model.module.eval()
    genes = np.asarray(model.setup.var_names)
    tables, convergence = [], []
    for t in targets:
        index = model.classes.index(t) if is_classifier else t
        forward = _forward(model, index)
        explainer = (IntegratedGradients if method == "integrated_gradients" else InputXGradient)(forward)
        cells = cells_of.get(t, all_cells)
        total = np.zeros(len(genes))
        deltas, changes = [], []
        for s in range(0, len(cells), batch_size):
            b = data[cells[s : s + batch_size]]
            x = _model_input(model, b).detach().requires_grad_(True)
            extra = (model.module.covariates(b),)
            if method == "integrated_gradients":
                base = torch.zeros_like(x) if mean_cell is None else mean_cell.expand_as(x)
                attr, delta = explainer.attribute(
                    x,
                    baselines=base,
                    additional_forward_args=extra,
                    n_steps=int(n_steps),
                    return_convergence_delta=True,
                )
                with torch.no_grad():
                    change = forward(x, *extra) - forward(base, *extra)
                deltas.append(delta.abs().detach().numpy())
                changes.append(change.abs().numpy())
            else:
                attr = explainer.attribute(x, additional_forward_args=extra)
            total += attr.detach().double().sum(dim=0).numpy()
        score = total / max(len(cells), 1)
        order = np.argsort(-score, kind="stable")
        ranks = np.empty(len(genes), dtype=int)
        ranks[order] = np.arange(1, len(genes) + 1)
        tables.append(
            pd.DataFrame({"target": str(t), "gene": genes, "score": score, "rank": ranks}).sort_values("rank")
        )
        row = {"target": str(t), "n_cells": len(cells)}
        if deltas:
            delta, change = np.concatenate(deltas).mean(), np.concatenate(changes).mean()
            row |= {"mean_abs_delta": float(delta), "relative_delta": float(delta / max(change, 1e-12))}
            if row["relative_delta"] > MAX_RELATIVE_DELTA:
                warnings.warn(
                    f"integrated gradients of target {t!r} did not converge well (convergence delta "
                    f"{row['relative_delta']:.1%} of the output's change); raise n_steps (now {n_steps}).",
                    UserWarning,
                    stacklevel=2,
                )
        convergence.append(row)

    adata.uns[key_added] = {
        "results": pd.concat(tables, ignore_index=True),
        "convergence": pd.DataFrame(convergence),
        "params": {
            "model": type(model).__name__,
            "method": method,
            "baseline": baseline,
            "n_steps": int(n_steps),
            **({"groupby": groupby} if groupby is not None else {}),
        },
    }
    logg.info("    finished", time=start, deep=f"added\n    '{key_added}', gene rankings per target (adata.uns)")
