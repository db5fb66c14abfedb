"""The user-facing classifier: wires AnnData ↔ :class:`~sclatent.module.ClassifierModule` ↔ Lightning."""

from __future__ import annotations

import copy
from datetime import timedelta  # noqa: TC003 - in the signature users read
from pathlib import Path  # noqa: TC003 - in the signature users read
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ..module import ClassifierConfig, ClassifierModule
from ..nn._base import check_layers, check_norm
from ..train import CellData, TrainingPlan, check_fit_arguments, holdout_split, run_fit
from ._autoencoder import default_max_epochs
from ._persist import history_from_json, history_to_json, read_model, write_model
from ._setup import DataSetup, HoldsData, check_labels

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.strategies import Strategy

    from ._autoencoder import Autoencoder


class ValidationTakesClassError(ValueError):
    """The held-out validation cells would take every training cell of a class."""


def check_autoencoder(autoencoder, layer: str | None) -> None:
    """Raise unless ``autoencoder`` is ``None`` or a trained autoencoder that reads ``layer`` (``None``: its own)."""
    if autoencoder is None:
        return
    from ._autoencoder import Autoencoder

    if not isinstance(autoencoder, Autoencoder):
        msg = f"autoencoder must be a trained sl.models.Autoencoder, got {type(autoencoder).__name__}; get one with `sl.tl.autoencode(adata, return_model=True)`."
        raise TypeError(msg)
    if not autoencoder.is_trained:
        msg = "the autoencoder is not trained; train it first (`model.fit()`, or `sl.tl.autoencode(adata, return_model=True)`)."
        raise ValueError(msg)
    autoencoder.check_latent_axes()
    if layer is not None and layer != autoencoder.setup.layer:
        msg = (
            f"layer={layer!r}, but the autoencoder reads the counts of layer {autoencoder.setup.layer!r} "
            f"(None is adata.X); with an autoencoder leave layer=None, and its own layer is used."
        )
        raise ValueError(msg)


class Classifier(HoldsData):
    """A neural-network classifier of cells from their raw counts (cell type, condition, …).

    An MLP on ``log1p`` of counts per 10,000, computed inside the model from the raw counts of
    ``layer``, so that gradients and attributions are per gene. With ``autoencoder=`` the MLP
    reads that trained autoencoder's latent (as its ``get_latent`` gives it) instead, computed inside the
    model by a frozen copy of its encoder from the same raw counts (the autoencoder's genes,
    layer and covariates), so that attributions are still per gene and new data need only
    their counts. Trained with cross-entropy and
    early stopping on held-out cells, which can be whole groups (donors) with ``validation_groups``.
    Genes of new data are matched by name, as for :class:`~sclatent.models.Autoencoder`.

    Parameters
    ----------
    adata
        Cells × genes with raw counts, e.g. the highly variable genes.
    label_key
        Column of ``adata.obs`` with each cell's class (every cell labelled; each class at least two cells).
    layer
        Layer with the counts; ``None`` means ``adata.X`` (with ``autoencoder``, the
        autoencoder's own layer).
    autoencoder
        A trained :class:`~sclatent.models.Autoencoder`: classify from its latent. Its weights
        are copied and never change; ``adata`` needs its genes and covariate columns.
    n_hidden
        Width of the hidden layers.
    n_layers
        Hidden layers.
    dropout_rate
        Dropout after each hidden layer.
    norm
        ``"layer"``, ``"batch"`` or ``"none"``.
    random_state
        Seed for the weights, the validation split and the minibatch order.

    Examples
    --------
    >>> clf = sl.models.Classifier(train, "condition").fit(validation_groups=train.obs["donor"])  # doctest: +SKIP
    >>> test.obs["predicted"] = clf.predict(test)  # doctest: +SKIP
    """

    def __init__(
        self,
        adata: AnnData,
        label_key: str,
        *,
        layer: str | None = None,
        autoencoder: Autoencoder | None = None,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.2,
        norm: str = "layer",
        random_state: int = 0,
    ) -> None:
        check_norm(norm)
        check_layers(n_hidden=n_hidden, n_layers=n_layers, dropout_rate=dropout_rate)
        check_autoencoder(autoencoder, layer)
        labels = check_labels(adata, label_key)
        counts = labels.value_counts()
        if len(counts) < 2:
            msg = (
                f"obs[{label_key!r}] has a single class ({counts.index[0]!r}); pass a column with two or more classes."
            )
            raise ValueError(msg)
        if (counts < 2).any():
            msg = f"classes {counts.index[counts < 2].tolist()} of obs[{label_key!r}] have a single cell; drop them or merge them into other classes first."
            raise ValueError(msg)
        if autoencoder is None:
            self.setup = DataSetup.from_adata(adata, counts=True, layer=layer)
        else:  # the autoencoder's genes, layer and covariates, checked as it checks them
            self.setup = copy.deepcopy(autoencoder.setup)
        self._data = self.setup.read(adata)
        self.label_key = label_key
        self.classes = sorted(counts.index.tolist())
        self._codes = pd.Categorical(labels, categories=self.classes).codes.astype(np.int64)
        self.config = ClassifierConfig(
            n_genes=len(self.setup.var_names),
            n_classes=len(self.classes),
            n_hidden=int(n_hidden),
            n_layers=int(n_layers),
            dropout_rate=float(dropout_rate),
            norm=norm,
            encoder=None if autoencoder is None else autoencoder.config.to_dict(),
        )
        self.random_state = int(random_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            self.module = ClassifierModule(self.config, None if autoencoder is None else autoencoder.module)
        self.history = pd.DataFrame({"train_loss": [], "validation_loss": []})
        self.training_info: dict = {}
        self.train_indices = self.validation_indices = np.array([], dtype=int)
        self.is_trained = False

    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "not trained"
        reads = "" if self.config.encoder is None else f", from a latent of {self.config.encoder['n_latent']}"
        return f"Classifier(label_key={self.label_key!r}, classes={len(self.classes)}, genes={self.config.n_genes}{reads}; {state})"

    def fit(
        self,
        *,
        max_epochs: int | None = None,
        early_stopping: bool = True,
        early_stopping_patience: int = 10,
        validation_fraction: float = 0.1,
        validation_groups: Sequence | np.ndarray | pd.Series | None = None,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        strategy: str | Strategy = "auto",
        num_nodes: int = 1,
        progress_bar: bool = True,
        callbacks: Sequence[Callback] = (),
        max_time: str | timedelta | None = None,
    ) -> Classifier:
        """Train with cross-entropy on the AnnData given at construction.

        The validation cells (random, or whole ``validation_groups``) are held out for early
        stopping; the best epoch's weights are kept. The probabilities are then calibrated on
        the same cells by temperature scaling (``training_info["temperature"]``). Interrupts, ``max_time`` and a diverging
        loss are handled as in :meth:`Autoencoder.fit <sclatent.models.Autoencoder.fit>`.

        Parameters
        ----------
        max_epochs
            Passes over the training cells; by default a quarter of
            :func:`~sclatent.models.default_max_epochs` (a classifier learns faster).
        early_stopping, early_stopping_patience, validation_fraction, validation_groups
            As for :meth:`Autoencoder.fit <sclatent.models.Autoencoder.fit>`.
        batch_size, learning_rate, weight_decay
            Cells per minibatch; Adam's learning rate and weight decay.
        accelerator, devices, strategy, num_nodes, progress_bar, callbacks, max_time
            As for :meth:`Autoencoder.fit <sclatent.models.Autoencoder.fit>`.

        Returns
        -------
        The trained classifier itself.
        """
        if self._data is None:
            msg = "this classifier was loaded and holds no data to train on; train a new one, `sl.models.Classifier(adata, label_key).fit()`."
            raise ValueError(msg)
        X, library, cat, cont = self._own_data()
        n = X.shape[0]
        if max_epochs is None:
            max_epochs = max(default_max_epochs(n) // 4, 10)
        validation_groups = check_fit_arguments(
            n,
            max_epochs=max_epochs,
            validation_fraction=validation_fraction,
            batch_size=batch_size,
            early_stopping=early_stopping,
            validation_groups=validation_groups,
        )
        rng = np.random.default_rng(self.random_state)
        train_idx, val_idx = holdout_split(n, validation_fraction, rng, validation_groups)
        missing = sorted(set(self.classes) - {self.classes[c] for c in np.unique(self._codes[train_idx])})
        if missing:
            msg = f"holding out the validation cells leaves no training cell of the classes {missing}; lower validation_fraction or hold out other groups."
            raise ValidationTakesClassError(msg)
        self.module.temperature.fill_(1.0)  # calibrated again below
        data = CellData(X, library, cat, cont, labels=self._codes)
        plan = TrainingPlan(self.module, learning_rate=learning_rate, weight_decay=weight_decay, kl_warmup_epochs=0)
        outcome = run_fit(
            plan,
            data,
            train_idx,
            val_idx,
            max_epochs=int(max_epochs),
            batch_size=batch_size,
            seed=self.random_state,
            early_stopping=early_stopping,
            early_stopping_patience=early_stopping_patience,
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            num_nodes=num_nodes,
            progress_bar=progress_bar,
            callbacks=callbacks,
            max_time=max_time,
        )
        self.history = outcome.history
        temperature = self._calibrate(val_idx) if len(val_idx) else 1.0
        self.training_info = {
            "n_epochs": outcome.n_epochs,
            "max_epochs": int(max_epochs),
            "best_epoch": outcome.best_epoch,
            "stop_reason": outcome.stop_reason,
            "complete": outcome.stop_reason in ("early_stopping", "max_epochs"),
            "train_time_s": outcome.seconds,
            "batches": outcome.batches,
            "n_train_cells": len(train_idx),
            "n_validation_cells": len(val_idx),
            "batch_size": int(batch_size),
            "learning_rate": float(learning_rate),
            "weight_decay": float(weight_decay),
            "temperature": temperature,
            "world_size": outcome.world_size,
            "global_rank": outcome.global_rank,
        }
        if validation_groups is not None:
            self.training_info["validation_groups"] = sorted(set(validation_groups[val_idx]))
        self.train_indices, self.validation_indices = train_idx, val_idx
        self.is_trained = True
        return self

    @torch.inference_mode()
    def _logits(self, data: CellData, batch_size: int = 4096) -> np.ndarray:
        self.module.eval()
        out = np.empty((len(data), len(self.classes)), dtype=np.float32)
        for start in range(0, len(data), batch_size):
            b = data[np.arange(start, min(start + batch_size, len(data)))]
            out[start : start + len(b["x"])] = self.module.logits(
                b["x"], b["library"], self.module.covariates(b)
            ).numpy()
        return out

    def _calibrate(self, idx: np.ndarray) -> float:
        """Temperature scaling: the temperature that minimises the cross-entropy of the held-out cells ``idx``."""
        from scipy.optimize import minimize_scalar
        from scipy.special import log_softmax

        self.module.temperature.fill_(1.0)
        X, library, cat, cont = self._own_data()
        logits = self._logits(CellData(X[idx], library[idx], cat[idx], cont[idx])).astype(np.float64)
        y = self._codes[idx]

        def nll(log_t: float) -> float:
            return float(-log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean())

        log_t = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x
        self.module.temperature.fill_(float(np.exp(log_t)))
        return float(np.exp(log_t))

    @torch.inference_mode()
    def predict_proba(self, adata: AnnData | None = None, *, batch_size: int = 4096) -> pd.DataFrame:
        """Class probabilities (cells × classes), calibrated, for ``adata`` (genes matched by name) or the training data."""
        if adata is None and self._data is None:
            msg = "this classifier holds no data (it was loaded); pass `adata` to predict."
            raise ValueError(msg)
        X, library, cat, cont = self._own_data() if adata is None else self.setup.read(adata)
        logits = torch.from_numpy(self._logits(CellData(X, library, cat, cont), batch_size))
        out = torch.softmax(logits, -1).numpy()
        index = None if adata is None else adata.obs_names
        return pd.DataFrame(out, columns=self.classes, index=index)

    def predict(self, adata: AnnData | None = None, *, batch_size: int = 4096) -> pd.Series:
        """Return the most probable class of each cell, as a categorical :class:`pandas.Series`."""
        proba = self.predict_proba(adata, batch_size=batch_size)
        codes = proba.to_numpy().argmax(axis=1)
        return pd.Series(pd.Categorical.from_codes(codes, categories=self.classes), index=proba.index)

    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Save to directory ``path`` (as :meth:`Autoencoder.save <sclatent.models.Autoencoder.save>`)."""
        meta = {
            "config": self.config.to_dict(),
            "setup": self.setup.to_dict(),
            "label_key": self.label_key,
            "classes": self.classes,
            "random_state": self.random_state,
            "is_trained": self.is_trained,
            "training_info": self.training_info,
            "history": history_to_json(self.history),
        }
        write_model(path, meta, self.module, kind="Classifier", overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        """Load a classifier saved with :meth:`save`, to predict new data."""
        meta, state = read_model(path, kind="Classifier")
        self = cls.__new__(cls)
        self.config = ClassifierConfig(**meta["config"])
        self.setup = DataSetup(**meta["setup"])
        self.label_key, self.classes = meta["label_key"], list(meta["classes"])
        self.random_state = meta["random_state"]
        self.module = ClassifierModule(self.config)
        self.module.load_state_dict(state)
        self.module.eval()
        self.is_trained = meta["is_trained"]
        self.training_info = meta["training_info"]
        self.history = history_from_json(meta["history"])
        self.train_indices = self.validation_indices = np.array([], dtype=int)
        self._data = None
        return self
