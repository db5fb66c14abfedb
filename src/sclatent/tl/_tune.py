"""Hyperparameter search for :func:`sclatent.tl.autoencode` with optuna (the optional ``sclatent[tune]``)."""

from __future__ import annotations

import inspect
import numbers
import time
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from ._autoencode import autoencode

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import optuna

#: The search space of :func:`sclatent.tl.tune` when none is given (see its docstring for the format).
DEFAULT_SEARCH_SPACE: dict[str, tuple | list] = {
    "n_latent": (8, 32),
    "n_hidden": [64, 128, 256],
    "n_layers": (1, 3),
    "dropout_rate": (0.0, 0.3),
    "likelihood": ["zinb", "nb"],
    "learning_rate": (1e-4, 1e-2, "log"),
    "batch_size": [128, 256, 512],
}

#: The parameters of :func:`sclatent.tl.autoencode`, which the search space and the keywords may name.
AUTOENCODE_PARAMETERS = tuple(inspect.signature(autoencode).parameters)

#: Metrics of :func:`sclatent.tl.compare_embeddings` that ``metric=`` can name, and their row there.
LABEL_METRICS = {"total": "total", "bio": "bio conservation", "batch": "batch correction"}

#: Parameters of :func:`sclatent.tl.autoencode` that are settings of the run, not hyperparameters.
#: ``validation_fraction`` is one: another fraction holds out other cells, so losses would not compare.
NOT_SEARCHABLE = frozenset(
    {
        "adata",
        "layer",
        "batch_key",
        "categorical_covariate_keys",
        "continuous_covariate_keys",
        "validation_fraction",
        "validation_groups_key",
        "accelerator",
        "devices",
        "strategy",
        "num_nodes",
        "precision",
        "random_state",
        "key_added",
        "denoise",
        "transform_batch",
        "callbacks",
        "max_time",
        "checkpoint_dir",
        "copy",
        "progress_bar",
        "return_model",
    }
)

#: Settings of the median pruner behind ``pruner="median"``.
MEDIAN_STARTUP_TRIALS = 5
MEDIAN_WARMUP_EPOCHS = 10

_SPACE_FORMAT = (
    "a tuple `(low, high)` of two numbers for a range (integers when both are integers), "
    '`(low, high, "log")` for a log scale, or a list of choices'
)


def _import_optuna():
    try:
        import optuna
        from optuna_integration.pytorch_lightning import PyTorchLightningPruningCallback
    except ImportError as err:
        msg = (
            "sl.tl.tune needs the optional packages optuna and optuna-integration; "
            "install them with `pip install 'sclatent[tune]'`."
        )
        raise ImportError(msg) from err
    return optuna, PyTorchLightningPruningCallback


def _distribution(optuna, name: str, spec) -> optuna.distributions.BaseDistribution:
    """One entry of a search space as an optuna distribution, checked."""
    dist = optuna.distributions
    if isinstance(spec, list):
        choices = [c.item() if isinstance(c, np.generic) else c for c in spec]
        if not choices or not all(c is None or isinstance(c, bool | int | float | str) for c in choices):
            msg = f"search_space[{name!r}] must be a non-empty list of choices, each None, a bool, a number or a string; got {spec!r}."
            raise ValueError(msg)
        return dist.CategoricalDistribution(choices)
    if isinstance(spec, tuple) and len(spec) in (2, 3):
        low, high, *scale = spec
        numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (low, high))
        if numeric and scale in ([], ["log"]) and low < high:
            log = scale == ["log"]
            if log and low <= 0:
                msg = f"search_space[{name!r}] = {spec!r}: use low > 0 for a log scale, or drop 'log'."
                raise ValueError(msg)
            if isinstance(low, numbers.Integral) and isinstance(high, numbers.Integral):
                return dist.IntDistribution(int(low), int(high), log=log)
            return dist.FloatDistribution(float(low), float(high), log=log)
    msg = f"search_space[{name!r}] = {spec!r} is not a range or choices; use {_SPACE_FORMAT}, with low < high."
    raise ValueError(msg)


def _search_space(optuna, search_space: Mapping | None, fixed: Mapping) -> dict:
    """Check the space against autoencode's parameters and turn it into optuna distributions."""
    parameters = AUTOENCODE_PARAMETERS
    searchable = sorted(set(parameters) - NOT_SEARCHABLE)
    if search_space is None:  # a parameter fixed by a keyword leaves the default space
        search_space = {k: v for k, v in DEFAULT_SEARCH_SPACE.items() if k not in fixed}
    if not isinstance(search_space, dict) or not search_space:
        msg = f"search_space must be a non-empty dict of parameter names to ranges ({_SPACE_FORMAT}); got {search_space!r}."
        raise ValueError(msg)
    for name in search_space:
        if name not in parameters:
            msg = f"search_space key {name!r} is not a parameter of sl.tl.autoencode; use some of {searchable}."
            raise ValueError(msg)
        if name in NOT_SEARCHABLE:
            msg = f"{name!r} is a setting of the run, not a hyperparameter; pass it as `sl.tl.tune(..., {name}=...)` instead."
            raise ValueError(msg)
        if name in fixed:
            msg = f"{name!r} is both searched (search_space) and fixed (keyword argument); drop one of them."
            raise ValueError(msg)
    return {name: _distribution(optuna, name, spec) for name, spec in search_space.items()}


def _check_autoencode_kwargs(kwargs: Mapping) -> None:
    parameters = AUTOENCODE_PARAMETERS
    for name in kwargs:
        if name not in parameters or name == "adata":
            msg = f"sl.tl.tune got an unexpected keyword argument {name!r}; pass only parameters of sl.tl.autoencode."
            raise TypeError(msg)
        if name in ("copy", "return_model"):
            msg = f"sl.tl.tune writes its results into adata and has no {name!r}; call it on `adata.copy()` to keep adata as it is."
            raise ValueError(msg)
    if kwargs.get("validation_fraction", 0.1) <= 0:
        msg = "sl.tl.tune scores and prunes trials on held-out cells; set validation_fraction > 0."
        raise ValueError(msg)


def _check_transform_batch(adata: AnnData, transform_batch, batch_key: str | None) -> None:
    """Raise before any trial unless ``transform_batch`` (used by the refit only) is a category of ``batch_key``."""
    if transform_batch is None:
        return
    if batch_key is None:
        msg = f"transform_batch={transform_batch!r} needs batch_key; pass batch_key, or no transform_batch."
        raise ValueError(msg)
    if batch_key in adata.obs and str(transform_batch) not in set(adata.obs[batch_key].astype(str)):
        msg = f"transform_batch={transform_batch!r} must be a category of batch_key={batch_key!r}; pass one of its categories."
        raise ValueError(msg)


def _check_metric(adata: AnnData, metric, label_key: str | None, batch_key: str | None) -> None:
    if callable(metric):
        if label_key is not None:
            msg = "label_key is used only by the metrics 'total', 'bio' and 'batch'; drop it or pick one of those."
            raise ValueError(msg)
        return
    if metric == "validation_loss":
        if label_key is not None:
            msg = "metric='validation_loss' needs no labels; drop label_key, or pick metric='total', 'bio' or 'batch'."
            raise ValueError(msg)
        return
    if not isinstance(metric, str) or metric not in LABEL_METRICS:
        msg = f"metric must be 'validation_loss', one of {list(LABEL_METRICS)} or a function of the AnnData; got {metric!r}."
        raise ValueError(msg)
    if label_key is None:
        msg = f"metric={metric!r} scores the latent against cell labels; pass label_key= (a column of adata.obs)."
        raise ValueError(msg)
    if metric == "batch" and batch_key is None:
        msg = "metric='batch' scores batch correction; pass batch_key= (a column of adata.obs)."
        raise ValueError(msg)
    from ..models._setup import MIN_CELLS
    from ._compare import _import_scib_metrics, _labels

    _import_scib_metrics()
    _labels(adata, label_key, "label_key")
    if batch_key is not None:
        _labels(adata, batch_key, "batch_key")
    if adata.n_obs < MIN_CELLS:
        msg = f"metric={metric!r} needs at least {MIN_CELLS} cells to score, got {adata.n_obs}; add cells or use metric='validation_loss'."
        raise ValueError(msg)


def _pruner(optuna, pruner):
    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=MEDIAN_WARMUP_EPOCHS)
    if pruner == "none":
        return optuna.pruners.NopPruner()
    msg = (
        f"pruner must be 'median', 'none' or an optuna pruner (e.g. optuna.pruners.HyperbandPruner()); got {pruner!r}."
    )
    raise ValueError(msg)


def _scratch(adata: AnnData, key_added: str) -> AnnData:
    """Make an AnnData on the same matrices (not copied) with its own obs, var and obsm, for a trial to write to."""
    obsm = {k: v for k, v in adata.obsm.items() if k != f"X_{key_added}"}
    layers = {k: v for k, v in adata.layers.items() if k != f"{key_added}_denoised"}
    return AnnData(X=adata.X, obs=adata.obs.copy(), var=adata.var.copy(), obsm=obsm, layers=layers)


def _label_score(trial_adata: AnnData, key_added: str, metric: str, label_key: str, batch_key: str | None, seed: int):
    from ._compare import AGGREGATE, compare_embeddings

    keys = [label_key] + ([batch_key] if batch_key is not None else [])
    rep = f"X_{key_added}"
    scored = AnnData(obs=trial_adata.obs[keys].copy(), obsm={rep: trial_adata.obsm[rep]})
    df = compare_embeddings(scored, rep, label_key=label_key, batch_key=batch_key, pca=False, random_state=seed)
    row = (df["category"] == AGGREGATE) & (df["metric"] == LABEL_METRICS[metric])
    return float(df.loc[row, "value"].item())


def _column(values: pd.Series):
    """Turn a parameter column into one h5ad can write: numbers, booleans, or the choices as categories."""
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in ("integer", "floating", "mixed-integer-float", "empty"):
        return pd.to_numeric(values)
    if kind == "boolean":
        return values.astype("boolean" if values.isna().any() else bool)
    return pd.Categorical([None if v is None or v != v else str(v) for v in values])


def _state(optuna, trial: optuna.trial.FrozenTrial, interrupted: set[int]) -> str:
    if trial.number in interrupted:
        return "interrupted"
    return {
        optuna.trial.TrialState.COMPLETE: "complete",
        optuna.trial.TrialState.PRUNED: "pruned",
        optuna.trial.TrialState.FAIL: "failed",
    }.get(trial.state, trial.state.name.lower())


def _results(optuna, study, space: dict, sign: float, interrupted: set[int], random_state: int) -> dict:
    """Tabulate the trials for h5ad: one row per trial, validation losses per epoch, importances."""
    trials = study.get_trials(deepcopy=False)
    rows = []
    for t in trials:
        duration = t.duration.total_seconds() if t.duration is not None else np.nan
        value = sign * t.value if t.state == optuna.trial.TrialState.COMPLETE else np.nan
        rows.append(
            {
                "number": t.number,
                "state": _state(optuna, t, interrupted),
                "value": float(value),
                **{name: t.params.get(name) for name in space},
                "n_epochs": len(t.intermediate_values),
                "duration_s": float(duration),
            }
        )
    table = pd.DataFrame(rows, columns=["number", "state", "value", *space, "n_epochs", "duration_s"])
    for name in space:
        table[name] = _column(table[name])
    table.index = table.index.astype(str)
    width = max((max(t.intermediate_values, default=-1) + 1 for t in trials), default=0)
    curves = np.full((len(trials), width), np.nan)
    for i, t in enumerate(trials):
        for step, v in t.intermediate_values.items():
            curves[i, step] = v
    importances = {}
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len({t.value for t in complete}) >= 2:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=random_state)
        importances = {
            k: float(v) for k, v in optuna.importance.get_param_importances(study, evaluator=evaluator).items()
        }
    return {"trials": table, "validation_loss": curves, "importances": importances}


def _space_record(space: dict) -> dict:
    record = {}
    for name, d in space.items():
        if hasattr(d, "choices"):
            choices = np.asarray(d.choices)
            if choices.dtype == object:
                choices = np.asarray([str(c) for c in d.choices])
            record[name] = {"type": "categorical", "choices": choices}
        else:
            kind = "int" if isinstance(d.low, int) else "float"
            record[name] = {"type": kind, "low": d.low, "high": d.high, "log": bool(d.log)}
    return record


def tune(
    adata: AnnData,
    *,
    search_space: Mapping[str, tuple | list] | None = None,
    n_trials: int | None = 20,
    timeout: float | None = None,
    metric: str | Callable[[AnnData], float] = "validation_loss",
    label_key: str | None = None,
    batch_key: str | None = None,
    pruner: str | optuna.pruners.BasePruner = "median",
    random_state: int = 0,
    refit: bool = True,
    key_added: str = "sclatent",
    **autoencode_kwargs,
) -> None:
    """Search the hyperparameters of :func:`sclatent.tl.autoencode` with optuna, then train with the best.

    Each trial trains a model with :func:`~sclatent.tl.autoencode` on parameters drawn by optuna's
    TPE sampler from ``search_space``, with the other arguments as given. Trials that do badly are
    stopped early (pruned) on their validation loss. Needs the optional ``sclatent[tune]``
    (``pip install 'sclatent[tune]'``: optuna and optuna-integration).

    The default search space (``search_space=None``), in the format described below::

        {default_space}

    A parameter given as a keyword (e.g. ``likelihood="nb"``) is fixed and leaves the default
    space. ``kl_warmup_epochs`` (and ``weight_decay``, ``max_epochs``, ``variational``, …) can be
    searched by naming them in a space of your own; the KL warm-up is not searched by default,
    because the pruner compares validation losses epoch by epoch, which favours short warm-ups.
    Nor is ``kl_weight``: the validation loss is the evidence lower bound, which a KL weight of 1
    optimises, so search it (e.g. ``{"kl_weight": (0.25, 1.0)}``) with a label ``metric``.

    Interrupting (Ctrl+C, or "interrupt kernel" in Jupyter) ends the search: the running trial
    stops (recorded as ``"interrupted"``), the finished trials are kept and the refit uses the
    best of them. When no trial has finished, ``adata`` is left unchanged. A search in which no
    trial completes (all pruned or diverged) raises :class:`RuntimeError` and leaves ``adata``
    unchanged.

    Every trial trains with the same ``random_state``, so the validation cells are the same
    for all of them and the same seed gives the same trials on the CPU (without ``timeout``).

    Parameters
    ----------
    adata
        Annotated data matrix, cells × genes, as for :func:`~sclatent.tl.autoencode`.
    search_space
        The parameters to search, replacing the default space: a dict from a parameter of
        :func:`~sclatent.tl.autoencode` to a range or choices. A tuple ``(low, high)`` of two
        numbers is a uniform range (of integers when both are integers), ``(low, high, "log")``
        a range on a log scale, and a list is a set of choices, e.g.
        ``{"n_latent": (8, 32), "learning_rate": (1e-4, 1e-2, "log"), "likelihood": ["zinb", "nb"]}``.
        Settings of the run (``layer``, covariate keys, ``validation_fraction``, ``accelerator``,
        ``random_state``, …) cannot be searched.
    n_trials
        Trials to run. ``None`` runs until ``timeout``.
    timeout
        Start no new trial after this many seconds (the running one finishes).
    metric
        What to optimise.

        - ``"validation_loss"``: the loss on the held-out cells (negative ELBO per cell) of the
          weights a trial keeps (those of its best epoch with early stopping), minimised. Needs
          no labels; compares count likelihoods (``"zinb"``, ``"nb"``, ``"poisson"``) fairly, but
          not with ``"gaussian"``, nor ``variational=False`` with ``True`` (no KL term).
        - ``"total"``, ``"bio"`` or ``"batch"``: the aggregate scIB score, bio conservation or
          batch correction of :func:`~sclatent.tl.compare_embeddings` on the trial's latent,
          maximised. Needs ``label_key`` (and ``batch_key`` for ``"batch"``) and the optional
          ``sclatent[metrics]``.
        - a function that takes an AnnData and returns a number, maximised (return the negative
          of something to be minimised). It gets an AnnData with ``adata``'s matrices (shared,
          not copied: do not modify them), its own ``obs`` and ``obsm``, and the trial's results
          as :func:`~sclatent.tl.autoencode` writes them: the latent in
          ``obsm['X_{key_added}']`` and ``uns['{key_added}']`` (no denoised layer).

        Whatever the metric, trials are pruned on their validation loss.
    label_key
        Column of ``adata.obs`` with cell types, for the label metrics.
    batch_key
        Column of ``adata.obs`` with batches: the model's ``batch_key`` and, for the label
        metrics, the batches whose mixing is scored.
    pruner
        ``"median"``: a trial is stopped at an epoch where its validation loss is worse than
        the median of earlier trials at the same epoch; never in the first 5 trials nor in a
        trial's first 10 epochs (optuna's ``MedianPruner(n_startup_trials=5, n_warmup_steps=10)``).
        ``"none"`` runs every trial in full. Or any optuna pruner object
        (``optuna.pruners.BasePruner``), which is fed each trial's validation loss after every epoch.
    random_state
        Seed of the sampler (``optuna.samplers.TPESampler(seed=random_state)``) and of every
        trial's training (:func:`~sclatent.tl.autoencode`'s ``random_state``).
    refit
        Train with the best parameters afterwards and write the results as
        :func:`~sclatent.tl.autoencode` does. With ``False``, only the search is recorded: the
        ``tune`` entry is added to ``adata.uns[key_added]``, whose other entries (from an
        earlier run, if any) are left as they are.
    key_added
        Name under which the results are stored.
    **autoencode_kwargs
        Further arguments of :func:`~sclatent.tl.autoencode`, used by every trial and the refit
        (e.g. ``layer="counts"``, ``max_epochs=100``). The trials run without a progress bar
        (unless ``progress_bar=True``), without the denoised layer and without
        ``checkpoint_dir``, which only the refit uses. Trials that diverge are recorded as
        failed and the search goes on.

    Returns
    -------
    ``None``. With ``refit=True``, writes what :func:`~sclatent.tl.autoencode` writes with the
    best parameters (``obsm['X_{key_added}']``, ``layers['{key_added}_denoised']`` and
    ``uns['{key_added}']`` with ``params``, ``history``, ``training``, ``versions``), and in every
    case adds:

    ``adata.uns['{key_added}']['tune']['trials']`` : :class:`~pandas.DataFrame`
        One row per trial: ``number``, ``state`` (``"complete"``, ``"pruned"``, ``"failed"`` or
        ``"interrupted"``), ``value`` (the metric, for complete trials), one column per searched
        parameter, ``n_epochs`` (epochs with a validation loss) and ``duration_s``.
    ``adata.uns['{key_added}']['tune']['validation_loss']`` : :class:`numpy.ndarray`
        Trials × epochs: each trial's validation loss per epoch, as the pruner saw it (NaN after
        the end of a trial).
    ``adata.uns['{key_added}']['tune']['best_params']`` : :class:`dict`
        The parameters of the best complete trial (with ``best_trial`` and ``best_value``).
    ``adata.uns['{key_added}']['tune']['importances']`` : :class:`dict`
        Importance of each parameter for the metric (optuna's fANOVA, summing to 1), from the
        complete trials; empty with fewer than two distinct values.
    ``adata.uns['{key_added}']['tune']['search_space']`` : :class:`dict`
        The space searched, and ``params`` the settings of the search (metric, direction,
        pruner, seeds, …).

    Examples
    --------
    >>> import sclatent as sl
    >>> sl.tl.tune(adata, n_trials=20, max_epochs=200)  # doctest: +SKIP
    >>> adata.uns["sclatent"]["tune"]["best_params"]  # doctest: +SKIP
    >>> sl.pl.tune(adata)  # doctest: +SKIP
    >>> sl.tl.tune(adata, metric="bio", label_key="cell_type", search_space={"n_latent": (5, 50)})  # doctest: +SKIP
    """
    optuna, PruningCallback = _import_optuna()  # fail before any work when the extra is missing
    if n_trials is None and timeout is None:
        msg = "n_trials=None runs until `timeout`; pass timeout= (seconds) or a number of trials."
        raise ValueError(msg)
    if n_trials is not None and (
        not isinstance(n_trials, numbers.Integral) or isinstance(n_trials, bool) or n_trials < 1
    ):
        msg = f"n_trials must be an integer ≥ 1, got {n_trials!r}."
        raise ValueError(msg)
    if timeout is not None and not timeout > 0:
        msg = f"timeout must be a positive number of seconds, got {timeout!r}."
        raise ValueError(msg)
    _check_autoencode_kwargs(autoencode_kwargs)
    _check_transform_batch(adata, autoencode_kwargs.get("transform_batch"), batch_key)
    space = _search_space(optuna, search_space, autoencode_kwargs)
    _check_metric(adata, metric, label_key, batch_key)
    pruner = _pruner(optuna, pruner)

    maximise = metric != "validation_loss"
    sign = -1.0 if maximise else 1.0  # the study minimises: the validation loss, or minus a score
    metric_name = metric if isinstance(metric, str) else getattr(metric, "__qualname__", type(metric).__name__)
    progress_bar = autoencode_kwargs.pop("progress_bar", False)
    user_callbacks = list(autoencode_kwargs.get("callbacks", ()))
    trial_kwargs = {
        k: v
        for k, v in autoencode_kwargs.items()
        if k not in ("callbacks", "checkpoint_dir", "denoise", "transform_batch")
    }

    interrupted: set[int] = set()  # numbers of the trials stopped by Ctrl+C (-1: between trials)

    def objective(trial: optuna.trial.Trial) -> float:
        params = {}
        for name, d in space.items():
            if hasattr(d, "choices"):
                params[name] = trial.suggest_categorical(name, d.choices)
            elif isinstance(d, optuna.distributions.IntDistribution):
                params[name] = trial.suggest_int(name, d.low, d.high, log=d.log)
            else:
                params[name] = trial.suggest_float(name, d.low, d.high, log=d.log)
        trial_adata = _scratch(adata, key_added)
        model = autoencode(
            trial_adata,
            **trial_kwargs,
            **params,
            batch_key=batch_key,
            random_state=random_state,
            key_added=key_added,
            denoise=False,
            callbacks=[*user_callbacks, PruningCallback(trial, monitor="validation_loss")],
            progress_bar=progress_bar,
            return_model=True,
        )
        info = model.training_info
        if info["stop_reason"] == "interrupted":
            interrupted.add(trial.number)
            trial.study.stop()
            raise optuna.TrialPruned("stopped by an interrupt")  # not an error: ends the trial, recorded as such
        # the callback only warns when the name it watches is not logged: check that it saw every validation loss
        reported = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        validated = int(np.isfinite(model.history["validation_loss"].to_numpy()).sum())
        if len(reported.intermediate_values) != validated:
            msg = (
                f"the pruning callback saw {len(reported.intermediate_values)} of {validated} validation losses: "
                "the model no longer logs 'validation_loss'. This is a bug in sclatent: please report it, and use sl.tl.autoencode meanwhile."
            )
            raise RuntimeError(msg)
        if metric == "validation_loss":
            value = float(model.history["validation_loss"].iloc[info["best_epoch"]])
        elif callable(metric):
            value = float(metric(trial_adata))
        else:
            value = _label_score(trial_adata, key_added, metric, label_key, batch_key, random_state)
        return sign * value

    def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        state = _state(optuna, trial, interrupted)
        # optuna gives a pruned trial its last reported value, a validation loss whatever the metric: not shown
        complete = trial.state == optuna.trial.TrialState.COMPLETE
        value = f" {metric_name}={sign * trial.value:.5g}," if complete and trial.value is not None else ""
        logg.info(f"    trial {trial.number} {state}:{value} {trial.params}")

    start = logg.info(
        f"tuning {len(space)} hyperparameters of sl.tl.autoencode over "
        f"{n_trials if n_trials is not None else 'as many'} trials ({metric_name})"
    )
    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=random_state), pruner=pruner
    )
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are logged with scanpy's verbosity
    t0 = time.perf_counter()
    try:
        study.optimize(
            objective, n_trials=n_trials, timeout=timeout, catch=(FloatingPointError,), callbacks=[log_trial]
        )
    except KeyboardInterrupt:  # outside a fit (which stops gracefully): optuna marked the running trial failed
        last = study.get_trials(deepcopy=False)[-1:]
        interrupted.add(last[0].number if last and last[0].state != optuna.trial.TrialState.COMPLETE else -1)
    finally:
        optuna.logging.set_verbosity(verbosity)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        if interrupted:
            warnings.warn(
                "tuning interrupted before any trial finished; adata is left unchanged.", UserWarning, stacklevel=2
            )
            return
        msg = (
            f"none of the {len(study.trials)} trials completed (pruned or diverged); see the log, then narrow "
            "search_space (e.g. a lower learning_rate range) or pass pruner='none'."
        )
        raise RuntimeError(msg)
    if interrupted:
        warnings.warn(
            f"tuning interrupted; keeping the {len(complete)} finished trials"
            + (" and training with the best of them." if refit else "."),
            UserWarning,
            stacklevel=2,
        )

    best = study.best_trial
    results = _results(optuna, study, space, sign, interrupted, random_state)
    best_params = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in best.params.items() if v is not None}
    record = {
        **results,
        "best_params": best_params,
        "best_trial": int(best.number),
        "best_value": float(sign * best.value),
        "search_space": _space_record(space),
        "params": {
            "metric": metric_name,
            "direction": "maximize" if maximise else "minimize",
            **({"n_trials": int(n_trials)} if n_trials is not None else {}),
            **({"timeout": float(timeout)} if timeout is not None else {}),
            **({"label_key": label_key} if label_key is not None else {}),
            **({"batch_key": batch_key} if batch_key is not None else {}),
            "pruner": pruner.__class__.__name__,
            "sampler": "TPESampler",
            "random_state": int(random_state),
            "refit": bool(refit),
            "interrupted": bool(interrupted),
            "search_time_s": float(time.perf_counter() - t0),
        },
    }
    n_pruned = int((results["trials"]["state"] == "pruned").sum())
    logg.info(
        f"    best trial {best.number} of {len(study.trials)} ({n_pruned} pruned): {metric_name}="
        f"{sign * best.value:.5g}, {best_params}"
    )
    if refit:
        try:
            autoencode(
                adata,
                **autoencode_kwargs,
                **best.params,
                batch_key=batch_key,
                random_state=random_state,
                key_added=key_added,
                progress_bar=progress_bar,
            )
        except BaseException as e:  # the search is not lost with the refit (an error, Ctrl+C while writing)
            record["params"] |= {"refit": False, "refit_error": f"{type(e).__name__}: {e}"}
            adata.uns.setdefault(key_added, {})["tune"] = record
            e.add_note(
                f"The trials are kept in adata.uns[{key_added!r}]['tune']; train the best model with "
                f"sl.tl.autoencode(adata, **adata.uns[{key_added!r}]['tune']['best_params'], ...)."
            )
            raise
    adata.uns.setdefault(key_added, {})["tune"] = record
    logg.info(
        "    finished tuning",
        time=start,
        deep=(
            (
                f"added\n    'X_{key_added}' and the other results of sl.tl.autoencode with the best parameters\n"
                if refit
                else "added\n"
            )
            + f"    '{key_added}'/'tune', the trials and best parameters (adata.uns)"
        ),
    )


# the docstring shows the default space as it is in the code
tune.__doc__ = tune.__doc__.replace(
    "{default_space}",
    "{\n" + "".join(f"            {k!r}: {v!r},\n" for k, v in DEFAULT_SEARCH_SPACE.items()) + "        }",
)
