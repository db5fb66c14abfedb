"""The user-facing model: wires AnnData ↔ :class:`~sclatent.module.AutoencoderModule` ↔ Lightning."""

from __future__ import annotations

import copy
import warnings
from datetime import timedelta  # noqa: TC003 - in the signature users read
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from scanpy import logging as logg

from ..module import AutoencoderConfig, AutoencoderModule, fused_zinb_status, get_likelihood
from ..nn._base import check_layers, check_norm
from ..train import (
    CellData,
    TrainingPlan,
    check_fit_arguments,
    cpu_has_fast_bf16,
    history_frame,
    holdout_split,
    run_fit,
)
from ._persist import check_checkpoint_dir, history_from_json, history_to_json, read_model, write_model
from ._setup import MIN_GENE_OVERLAP, DataSetup, HoldsData, cells_fingerprint, matrix_fingerprint

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.strategies import Strategy

#: At most this many training cells (a seeded random subset) set the latent's axes after training.
LATENT_AXES_CELLS = 2048


def default_max_epochs(n_cells: int) -> int:
    """Epochs to train for when ``max_epochs`` is not given: about 20,000 steps' worth of cells, 20 to 400 epochs."""
    return int(np.clip(round(2_500_000 / max(n_cells, 1)), 20, 400))


#: The longest KL warm-up the package chooses by itself (epochs); the defaults study chose it (``benchmarks/defaults.py``).
MAX_DEFAULT_KL_WARMUP_EPOCHS = 25


def default_kl_warmup_epochs(max_epochs: int) -> int:
    """KL warm-up when ``kl_warmup_epochs`` is not given: a quarter of ``max_epochs``, at most 25 epochs."""
    return min(MAX_DEFAULT_KL_WARMUP_EPOCHS, int(max_epochs) // 4)


#: From this many cells on, training runs its matrix products in bfloat16 by default where the CPU does them in hardware.
BF16_MIN_CELLS = 50_000


def default_precision(n_cells: int, accelerator: str = "auto") -> str:
    """``precision`` when none is given: ``"bf16-mixed"`` on a CPU with AVX512-BF16 or AMX from 50,000 cells on, else ``"32-true"``.

    bfloat16 matrix products keep the held-out ELBO of float32 training (weights, likelihood and loss
    stay float32; ``docs/benchmarks/precision.md``) and made an epoch at the default batch size
    1.1-1.5x faster on such a CPU (``docs/benchmarks/scale.md``). Smaller data keep float32, so that
    their results do not depend on the CPU; so do GPUs and other accelerators (also when
    ``accelerator="auto"`` finds one, or is an accelerator object), where bfloat16 has not been
    measured. Each process of distributed training decides for its own CPU.
    """
    on_cpu = trains_on_cpu(accelerator)
    return "bf16-mixed" if n_cells >= BF16_MIN_CELLS and on_cpu and cpu_has_fast_bf16() else "32-true"


def trains_on_cpu(accelerator: str = "auto") -> bool:
    """Whether Lightning trains on the CPU with ``accelerator`` (``"auto"``: when it finds no GPU, MPS or TPU)."""
    if isinstance(accelerator, str) and accelerator == "auto":
        from lightning.pytorch.accelerators import XLAAccelerator

        return not (torch.cuda.is_available() or torch.backends.mps.is_available() or XLAAccelerator.is_available())
    return isinstance(accelerator, str) and accelerator == "cpu"


def check_kl_weight(kl_weight: float) -> None:
    """Raise a clear error unless ``kl_weight`` is a positive finite number."""
    number = isinstance(kl_weight, int | float | np.number) and not isinstance(kl_weight, bool)
    if not number or not np.isfinite(kl_weight) or kl_weight <= 0:
        msg = f"kl_weight must be a positive finite number (1 is the evidence lower bound), got {kl_weight!r}."
        raise ValueError(msg)


class Autoencoder(HoldsData):
    """A (variational) autoencoder on single-cell counts with a batch-covariate encoder.

    The batch and categorical covariates (one-hot) and continuous covariates (standardised) are
    fed to every layer of the encoder and of the decoder, so that the latent space need not
    carry technical effects. The observation model is one of the registered likelihoods:
    ``"zinb"``, ``"nb"``, ``"poisson"`` (raw counts) or ``"gaussian"`` (log-normalised values).

    Parameters
    ----------
    adata
        Cells × genes. Subset to highly variable genes first, as for PCA or scVI. Data opened
        with ``backed="r"`` stay on disk and are trained on out of core
        (:class:`~sclatent.train.DiskBatches`).
    layer
        Layer with the data; ``None`` means ``adata.X``. Count likelihoods need raw counts.
    batch_key
        Column of ``adata.obs`` with the batch of each cell.
    categorical_covariate_keys
        Further categorical columns of ``adata.obs`` to condition on.
    continuous_covariate_keys
        Numeric columns of ``adata.obs`` to condition on (e.g. percent mitochondrial counts).
    likelihood
        ``"zinb"``, ``"nb"``, ``"poisson"``, ``"gaussian"`` or the name of a likelihood
        registered with :func:`sclatent.module.register_likelihood`.
    n_latent
        Dimensions of the latent space.
    n_hidden
        Width of the hidden layers.
    n_layers
        Hidden layers in the encoder and in the decoder.
    dropout_rate
        Dropout in the encoder.
    variational
        A VAE with KL warm-up (``True``) or a deterministic autoencoder like DCA (``False``).
    norm
        Normalisation of the hidden layers: ``"batch"``, ``"layer"`` or ``"none"``.
    encode_covariates
        Feed the covariates to the encoder too (``True``), or only to the decoder (``False``,
        as scvi-tools does by default).
    normalize_input
        Give the encoder log-normalised counts (each cell scaled to 10,000, then ``log1p``)
        instead of ``log1p`` of the raw counts; count likelihoods only.
    rescale_latent
        Express the latent (:meth:`get_latent`) in the decoder's metric: :meth:`fit` ends by
        rotating and scaling the posterior means so that Euclidean distances between cells
        measure how much their decoded log-expression differs, with the dimensions ordered by
        how much expression they change, as principal components are
        (:meth:`~sclatent.module.AutoencoderModule.fit_latent_axes`). ``False`` gives the
        posterior means themselves.
    random_state
        Seed for the weights, the validation split, the minibatch order and the sampling noise.

    Examples
    --------
    >>> import sclatent as sl
    >>> model = sl.models.Autoencoder(adata, batch_key="batch")  # doctest: +SKIP
    >>> model.fit(max_epochs=50)  # doctest: +SKIP
    >>> adata.obsm["X_sclatent"] = model.get_latent()  # doctest: +SKIP
    """

    def __init__(
        self,
        adata: AnnData,
        *,
        layer: str | None = None,
        batch_key: str | None = None,
        categorical_covariate_keys: Sequence[str] | None = None,
        continuous_covariate_keys: Sequence[str] | None = None,
        likelihood: str = "zinb",
        n_latent: int = 20,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        variational: bool = True,
        norm: str = "batch",
        encode_covariates: bool = True,
        normalize_input: bool = True,
        rescale_latent: bool = True,
        random_state: int = 0,
    ) -> None:
        likelihood_cls = get_likelihood(likelihood)
        check_norm(norm)  # before the data are read
        check_layers(n_latent=n_latent, n_hidden=n_hidden, n_layers=n_layers, dropout_rate=dropout_rate)
        self.setup = DataSetup.from_adata(
            adata,
            counts=likelihood_cls.counts,
            layer=layer,
            batch_key=batch_key,
            categorical_covariate_keys=categorical_covariate_keys,
            continuous_covariate_keys=continuous_covariate_keys,
        )
        # check the data now, before any work, and keep it for fit()
        self._data = self.setup.read(adata)
        self.config = AutoencoderConfig(
            n_genes=adata.n_vars,
            n_latent=int(n_latent),
            n_hidden=int(n_hidden),
            n_layers=int(n_layers),
            dropout_rate=float(dropout_rate),
            likelihood=likelihood,
            variational=variational,
            norm=norm,
            encode_covariates=bool(encode_covariates),
            normalize_input=bool(normalize_input),
            rescale_latent=bool(rescale_latent),
            n_categories=self.setup.n_categories,
            n_continuous=len(self.setup.continuous_covariate_keys),
        )
        self.random_state = int(random_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            self.module = AutoencoderModule(self.config)
        self.history = pd.DataFrame({"train_loss": [], "validation_loss": []})
        self.training_info: dict = {}
        #: Positions (in the training AnnData) of the cells trained on and held out, set by :meth:`fit`.
        self.train_indices = self.validation_indices = np.array([], dtype=int)
        #: Epochs trained so far, over all calls to :meth:`fit` (and before saving).
        self.trained_epochs = 0
        #: For each categorical covariate, the categories whose weights some :meth:`fit` trained on cells of theirs.
        self.trained_categories: dict[str, list[str]] = {k: [] for k in self.setup.categorical_keys}
        self.is_trained = False
        #: Whether the latent's axes belong to the current weights (``rescale_latent``); see :meth:`get_latent`.
        self.latent_axes_fitted = False

    def __repr__(self) -> str:
        c = self.config
        state = "trained" if self.is_trained else "not trained"
        return (
            f"Autoencoder(likelihood={c.likelihood!r}, n_latent={c.n_latent}, n_hidden={c.n_hidden}, "
            f"n_layers={c.n_layers}, variational={c.variational}, genes={c.n_genes}, "
            f"batch_key={self.setup.batch_key!r}; {state})"
        )

    # ---------------------------------------------------------------- training
    def fit(
        self,
        *,
        max_epochs: int | None = None,
        early_stopping: bool = True,
        early_stopping_patience: int = 20,
        validation_fraction: float = 0.1,
        validation_groups: Sequence | np.ndarray | pd.Series | None = None,
        batch_size: int = 256,
        learning_rate: float = 2e-3,
        weight_decay: float = 1e-6,
        kl_warmup_epochs: int | None = None,
        kl_weight: float = 1.0,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        strategy: str | Strategy = "auto",
        num_nodes: int = 1,
        progress_bar: bool = True,
        callbacks: Sequence[Callback] = (),
        max_time: str | timedelta | None = None,
        checkpoint_dir: str | Path | None = None,
        precision: str | None = None,
    ) -> Autoencoder:
        """Train on the AnnData given at construction (or continue training a trained or loaded model).

        Training that goes wrong is handled: a loss that becomes NaN or infinite stops training at
        once with a :class:`FloatingPointError` that says what to try (the model keeps its best
        weights so far, and nothing is returned from the diverged state). An interrupt (Ctrl+C,
        or "interrupt kernel" in Jupyter) or ``max_time`` stops training gracefully at the end
        of the current step: the best weights so far are kept (with early stopping or a
        ``checkpoint_dir``; otherwise the last ones) and ``training_info["complete"]`` is ``False``.

        Parameters
        ----------
        max_epochs
            Passes over the training cells; by default chosen from the number of cells
            (:func:`default_max_epochs`).
        early_stopping
            Stop when the validation loss has not improved for ``early_stopping_patience``
            epochs (never during KL warm-up), and restore the weights of the best epoch.
        early_stopping_patience
            Epochs without improvement before stopping.
        validation_fraction
            Fraction of cells held out to compute the validation loss. 0 turns validation off
            (and then early stopping must be off too).
        validation_groups
            A group label per training cell (e.g. ``adata.obs["donor"]``): whole groups are held
            out, until they hold at least ``validation_fraction`` of the cells, so that early
            stopping measures how the model does on groups it has not seen. At least one group
            stays in training. ``None`` holds out random cells.
        batch_size
            Cells per minibatch.
        learning_rate
            Adam's learning rate.
        weight_decay
            Adam's weight decay.
        kl_warmup_epochs
            Epochs over which the KL weight rises linearly from 0 to 1; by default a quarter of
            ``max_epochs`` (at most 25), or none when continuing from trained weights. Ignored
            when ``variational=False``. Early stopping waits for the warm-up to end.
        kl_weight
            The weight of the KL term once warm-up is over (1: the evidence lower bound, as
            scvi-tools trains). Below 1 the latent keeps more of what tells cells apart and
            corrects batches a little less. Early stopping always watches the evidence lower
            bound. Ignored when ``variational=False``.
        accelerator
            Lightning's accelerator: ``"auto"``, ``"cpu"``, ``"gpu"``, …
        devices
            Lightning's devices. ``"auto"`` is one device unless ``strategy`` or ``num_nodes`` asks
            for distributed training (then every device Lightning finds).
        strategy
            Lightning's strategy: ``"auto"`` (one process unless ``devices`` > 1), or ``"ddp"`` with ``devices=N`` (and
            ``num_nodes``) for distributed data parallel training, run as a script (``python
            script.py``, ``torchrun`` or ``srun``); see :func:`sclatent.train.run_fit`.
        num_nodes
            Machines taking part in distributed training.
        progress_bar
            Show a progress bar over epochs with the train and validation loss.
        callbacks
            Extra Lightning callbacks, e.g. a :class:`~lightning.pytorch.callbacks.ModelCheckpoint`.
        max_time
            Stop after this long, e.g. ``"00:01:00:00"`` (DD:HH:MM:SS) or a :class:`~datetime.timedelta`.
        checkpoint_dir
            Save the model (as :meth:`save`) to this directory every time the validation loss
            improves. Resume with ``Autoencoder.load(checkpoint_dir, adata).fit(...)``.
        precision
            ``"32-true"`` trains in float32. ``"bf16-mixed"`` runs the matrix products in
            bfloat16 while weights, likelihood and loss stay float32 (see
            :func:`sclatent.nn.full_precision`). Meant for CPUs with AVX512-BF16 or AMX and for
            GPUs with bfloat16 units; elsewhere bfloat16 is emulated. The held-out ELBO is that
            of float32 training within seed noise (the scale benchmark page has the speed).
            ``None`` chooses by the data and the machine (:func:`default_precision`):
            ``"bf16-mixed"`` from 50,000 cells on a CPU with AVX512-BF16 or AMX, else
            ``"32-true"``. ``training_info["precision"]`` says which ran.

        Returns
        -------
        The trained model itself.
        """
        if self._data is None:
            msg = "this model holds no data to train on; load it with data: `Autoencoder.load(path, adata)`."
            raise ValueError(msg)
        X, library, cat, cont = self._own_data()
        n = X.shape[0]
        if max_epochs is None:
            max_epochs = default_max_epochs(n)
        if precision is None:
            precision = default_precision(n, accelerator)
        validation_groups = check_fit_arguments(
            n,
            max_epochs=max_epochs,
            validation_fraction=validation_fraction,
            batch_size=batch_size,
            early_stopping=early_stopping,
            validation_groups=validation_groups,
        )
        check_kl_weight(kl_weight)
        if checkpoint_dir is not None:
            check_checkpoint_dir(checkpoint_dir, validation_fraction)
        if kl_warmup_epochs is None:
            kl_warmup_epochs = 0 if self.trained_epochs else default_kl_warmup_epochs(max_epochs)
        if not self.config.variational:
            kl_warmup_epochs = 0

        rng = np.random.default_rng(self.random_state)
        train_idx, val_idx = holdout_split(n, validation_fraction, rng, validation_groups)
        n_val = len(val_idx)
        if len(train_idx) < 2:
            msg = f"only {len(train_idx)} cells are left for training; lower validation_fraction or add cells."
            raise ValueError(msg)
        trained_categories = self._warn_untrained_categories(cat, train_idx)

        data = CellData(X, library, cat, cont)
        plan = TrainingPlan(
            self.module,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            kl_warmup_epochs=kl_warmup_epochs,
            kl_weight=float(kl_weight),
        )
        previous_epochs = self.trained_epochs
        settings = {
            "max_epochs": int(max_epochs),
            "n_train_cells": len(train_idx),
            "n_validation_cells": int(n_val),
            "batch_size": int(batch_size),
            "learning_rate": float(learning_rate),
            "weight_decay": float(weight_decay),
            "kl_warmup_epochs": int(kl_warmup_epochs),
            "kl_weight": float(kl_weight),
            "precision": precision,
            "early_stopping": bool(early_stopping),
            "validation_fraction": float(validation_fraction),
        }
        on_improve = None
        if checkpoint_dir is not None:
            checkpoint_dir = Path(checkpoint_dir)
            data_fingerprint = cells_fingerprint(X, library)

            def on_improve(epoch: int) -> None:
                # the checkpoint is a trained model of its own: its epoch's weights, split, history so far and settings
                info = {"n_epochs": epoch + 1, "best_epoch": epoch, "stop_reason": "checkpoint", "complete": False}
                if validation_groups is not None:
                    info["validation_groups"] = sorted(set(validation_groups[val_idx]))
                meta = self._meta() | {
                    "is_trained": True,
                    # setting the axes at every improvement would cost more than training small data: on load
                    "latent_axes_fitted": not self.config.rescale_latent,
                    "data_fingerprint": data_fingerprint,
                    "trained_epochs": previous_epochs + epoch + 1,
                    "trained_categories": trained_categories,
                    "training_info": info | {"trained_epochs_total": previous_epochs + epoch + 1} | settings,
                    "train_indices": train_idx.tolist(),
                    "validation_indices": val_idx.tolist(),
                    "history": history_to_json(history_frame(plan.history, epoch + 1)),
                }
                write_model(checkpoint_dir, meta, self.module, kind="Autoencoder", overwrite=True)

        self._check_axes_differentiable(data, train_idx[:1])  # before training, not after it
        on_cpu = trains_on_cpu(accelerator)
        self.module.likelihood.prepare(on_cpu=on_cpu)
        if on_cpu and self.config.likelihood == "zinb":  # "fused", or why the PyTorch kernel runs
            settings["zinb_kernel"] = fused_zinb_status()
        self.latent_axes_fitted = False  # the weights change from here
        try:
            outcome = run_fit(
                plan,
                data,
                train_idx,
                val_idx,
                max_epochs=max_epochs,
                batch_size=batch_size,
                seed=self.random_state,
                early_stopping=early_stopping,
                early_stopping_patience=early_stopping_patience,
                start_epoch=kl_warmup_epochs,
                on_improve=on_improve,
                accelerator=accelerator,
                devices=devices,
                strategy=strategy,
                num_nodes=num_nodes,
                progress_bar=progress_bar,
                callbacks=callbacks,
                max_time=max_time,
                precision=precision,
                divergence_advice=", or try likelihood='nb'",
            )
        except BaseException as error:
            # a fit that ends with an error keeps weights (a trained model's, or the best before diverging):
            # axes for them, unless they are not finite; the error itself is what the user sees
            if self.is_trained or isinstance(error, FloatingPointError):
                try:
                    self._fit_latent_axes(data, train_idx)
                except Exception:
                    self.latent_axes_fitted = False
            raise
        self.history = outcome.history
        n_epochs, stop_reason, elapsed = outcome.n_epochs, outcome.stop_reason, outcome.seconds
        self.trained_epochs = previous_epochs + n_epochs
        self.training_info = {
            "n_epochs": n_epochs,
            "best_epoch": outcome.best_epoch,
            "stopped_early": bool(n_epochs < max_epochs),
            "stop_reason": stop_reason,
            "complete": stop_reason in ("early_stopping", "max_epochs"),
            "trained_epochs_total": int(self.trained_epochs),
            "train_time_s": float(elapsed),
            **settings,
            "batches": outcome.batches,
            "world_size": outcome.world_size,
            "global_rank": outcome.global_rank,
        }
        if validation_groups is not None:
            self.training_info["validation_groups"] = sorted(set(validation_groups[val_idx]))
        self.train_indices, self.validation_indices = train_idx, val_idx
        self.trained_categories = trained_categories
        self.is_trained = True
        self._fit_latent_axes(data, train_idx)
        return self

    def _fit_latent_axes(self, data: CellData, cells: np.ndarray) -> None:
        """Set the latent's axes from the decoder at (at most :data:`LATENT_AXES_CELLS` of) the training ``cells``.

        Each cell is encoded and the decoder's Jacobian taken at its posterior mean, with its own
        covariates. Nothing changes without ``rescale_latent``, or while mapping a query
        (the reference's latent must not move).
        """
        if self.module.trains_new_columns_only:
            self.latent_axes_fitted = True  # the reference's axes, which mapping keeps
            return
        if not self.config.rescale_latent:
            self.latent_axes_fitted = True  # the posterior mean, which needs no axes
            return
        if len(cells) == 0:
            return
        rng = np.random.default_rng(self.random_state)
        cells = np.sort(rng.choice(cells, min(len(cells), LATENT_AXES_CELLS), replace=False))
        self.module.fit_latent_axes(self._decoder_gram(data, cells), len(cells))
        self.latent_axes_fitted = True

    def _decoder_gram(self, data: CellData, cells: np.ndarray) -> torch.Tensor:
        """Return the decoder's :meth:`~sclatent.module.AutoencoderModule.expression_gram` summed over ``cells``.

        Each cell is encoded and the Jacobian taken at its posterior mean, with its own
        covariates, in evaluation mode, 256 cells at a time; returned on the CPU.
        """
        module = self.module
        training = module.training
        module.eval()
        device = next(module.parameters()).device
        gram = torch.zeros(self.config.n_latent, self.config.n_latent, dtype=torch.float64, device=device)
        try:
            with torch.no_grad():
                for start in range(0, len(cells), 256):
                    batch = {k: v.to(device) for k, v in data[cells[start : start + 256]].items()}
                    cov = module.covariates(batch)
                    gram += module.expression_gram(module.encode(batch["x"], cov, batch["library"])[0], cov)
        finally:
            module.train(training)
        return gram.cpu()

    def _check_axes_differentiable(self, data: CellData, cells: np.ndarray) -> None:
        """Raise before training if the decoder cannot be differentiated forward-mode, as setting the axes needs."""
        if not self.config.rescale_latent or self.module.trains_new_columns_only or len(cells) == 0:
            return
        try:
            self._decoder_gram(data, cells)
        except (RuntimeError, NotImplementedError) as error:
            msg = (
                f"the latent's axes (`rescale_latent=True`) need the decoder's Jacobian by forward-mode "
                f"differentiation, which likelihood {self.config.likelihood!r} does not support ({error}); "
                "give its `normalized_mean` a forward-mode derivative (`jvp`), or pass `rescale_latent=False`."
            )
            raise TypeError(msg) from error

    def check_latent_axes(self) -> None:
        """Raise unless the latent's axes fit the weights."""
        if self.config.rescale_latent and self.is_trained and not self.latent_axes_fitted:
            msg = (
                "the latent's axes (`rescale_latent=True`) are not set for this model's weights: it is a checkpoint "
                "saved during training, or its last fit ended with an error. Load a checkpoint with the data it was "
                "trained on (`Autoencoder.load(path, adata)`), or fit the model again."
            )
            raise ValueError(msg)

    def _categories_with_cells(self, codes: np.ndarray) -> dict[str, set[str]]:
        """Return, for each categorical covariate, the categories that occur among the codes ``codes`` (cells × keys)."""
        out = {}
        for j, key in enumerate(self.setup.categorical_keys):
            names = np.asarray(self.setup.categories[key], dtype=object)
            out[key] = set(names[np.bincount(codes[:, j], minlength=len(names)) > 0])
        return out

    def _warn_untrained_categories(self, cat, train_idx: np.ndarray) -> dict[str, list[str]]:
        """Warn when a category of the data is not trained, by this fit nor an earlier one: its weights keep their initial values.

        Returns the trained categories of each covariate once this fit is done.
        """
        codes = np.asarray(cat)
        present = self._categories_with_cells(codes)  # a reference's categories are absent from a query
        in_training = self._categories_with_cells(codes[train_idx])
        trained = {}
        for key in self.setup.categorical_keys:
            before = set(self.trained_categories.get(key, []))
            trained[key] = sorted(before | in_training[key])
            missing = [c for c in self.setup.categories[key] if c in present[key] and c not in trained[key]]
            if missing:
                warnings.warn(
                    f"adata.obs[{key!r}] categories {missing[:10]} have no training cells (all held out for "
                    "validation): their weights are not trained, so their cells are not corrected for "
                    f"{key!r}. Hold out validation_groups that cut across {key!r}, or lower validation_fraction.",
                    UserWarning,
                    stacklevel=3,
                )
        return trained

    # ---------------------------------------------------------------- mapping new data
    def map_query(
        self,
        query: AnnData,
        *,
        max_epochs: int | None = None,
        early_stopping: bool = True,
        early_stopping_patience: int = 20,
        validation_fraction: float = 0.1,
        batch_size: int = 256,
        learning_rate: float = 2e-3,
        min_gene_overlap: float = MIN_GENE_OVERLAP,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        progress_bar: bool = True,
        callbacks: Sequence[Callback] = (),
        max_time: str | timedelta | None = None,
        precision: str | None = None,
    ) -> Autoencoder:
        """Map new data onto this trained model (architecture surgery, as scArches does) and return the mapped model.

        The query's batches (and categories of the other categorical covariates) that the model
        does not know are appended to it; the weights of these new categories alone are trained
        on the query, starting from the mean of the known categories' weights, without weight
        decay and with the normalisation statistics frozen. Everything the reference learnt stays
        as it was, so the reference's latent does not change, and reference and query latents can
        be analysed together. Query batches named like a reference batch are treated as that batch.

        Genes are matched by name. Genes of the model that the query lacks are filled with zeros
        (a warning says how many); fewer than ``min_gene_overlap`` of the model's genes is an
        error. Extra genes of the query are ignored.

        The encoder's new columns are what move the query's latent: with ``encode_covariates=False``
        the encoder does not see the batch, so the query's latent is the reference encoder's as it
        is, and the training adapts only the decoder (the denoised expression of the query).

        Parameters
        ----------
        query
            New cells, with the raw data in the model's layer and its covariate columns in
            ``obs``; the batch column may hold new batches.
        max_epochs
            Passes over the query cells; by default :func:`default_max_epochs` of their number.
        early_stopping, early_stopping_patience, validation_fraction, batch_size, learning_rate
            As for :meth:`fit`, on the query cells.
        min_gene_overlap
            The smallest fraction of the model's genes that the query must have.
        accelerator, devices, progress_bar, callbacks, max_time, precision
            As for :meth:`fit` (``precision=None`` chooses from the number of query cells).

        Returns
        -------
        A new model that knows the reference's and the query's batches and holds the query as its
        default data (``get_latent()`` gives the query's latent); this model is left as it was. Its
        ``history`` is the query training's, and ``training_info["map_query"]`` says what was added.

        Examples
        --------
        >>> mapped = model.map_query(query)  # doctest: +SKIP
        >>> query.obsm["X_sclatent"] = mapped.get_latent()  # doctest: +SKIP
        """
        if not self.is_trained:
            msg = "this model is not trained; train it on the reference first (`model.fit()`), then map the query."
            raise ValueError(msg)
        self.check_latent_axes()
        if self.setup.batch_key is None:
            msg = (
                "this model was trained without batch_key, so there are no batch weights to extend for the query; "
                "encode the query with `model.get_latent(query)` instead (genes matched by name; the query needs all the "
                "model's genes), or train a "
                "reference with `batch_key=`."
            )
            raise ValueError(msg)
        setup, added = self.setup.with_new_categories(query)  # the cheap checks on obs first
        aligned, n_missing = self.setup.align_genes(query, min_overlap=min_gene_overlap)
        data = setup.read(aligned)  # every check on the query's values, before any training
        key = self.setup.batch_key
        shared = sorted(set(aligned.obs[key].astype(str)) & set(self.setup.categories[key]))
        if n_missing:
            warnings.warn(
                f"the query lacks {n_missing} of the model's {len(self.setup.var_names)} genes; they are filled with "
                "zeros. Map a query with all the model's genes (`model.setup.var_names`) for the best latent.",
                UserWarning,
                stacklevel=2,
            )
        if self.config.norm == "batch":
            warnings.warn(
                "this model normalises its hidden layers with the reference's batch statistics, which do not fit "
                "cells of another technology or lab: such queries mix with the reference far less than with a model "
                "trained with norm='layer' (see the mapping benchmark). Train the reference with `norm='layer'` "
                "for mapping.",
                UserWarning,
                stacklevel=2,
            )
        if shared:
            warnings.warn(
                f"query batches {shared} are named like reference batches and are treated as those batches (their "
                "weights are not trained); rename them in the query's obs first if they are other batches.",
                UserWarning,
                stacklevel=2,
            )
        mapped = copy.copy(self)
        mapped.setup = setup
        mapped.trained_categories = {k: list(v) for k, v in self.trained_categories.items()}
        mapped.module, new_columns = self.module.with_categories([len(added[k]) for k in self.setup.categorical_keys])
        mapped.config = mapped.module.config
        mapped._data = data
        mapped.history = self.history.iloc[:0].copy()
        mapped.train_indices = mapped.validation_indices = np.array([], dtype=int)
        info = {
            "reference_categories": {k: list(self.setup.categories[k]) for k in self.setup.categorical_keys},
            "new_categories": added,
            "n_genes_filled_with_zeros": n_missing,
            "n_query_cells": int(aligned.n_obs),
        }
        if not new_columns.any():
            logg.info(
                "every category of the query is known to the model; nothing to train, the query is encoded as it is"
            )
            # the reference's KL weight stays known, for mapping a next query from this model
            mapped.training_info = {"kl_weight": self.training_info.get("kl_weight", 1.0), "map_query": info}
            return mapped
        with mapped.module.training_only_columns(new_columns):
            mapped.fit(
                max_epochs=max_epochs,
                early_stopping=early_stopping,
                early_stopping_patience=early_stopping_patience,
                validation_fraction=validation_fraction,
                batch_size=batch_size,
                learning_rate=learning_rate,
                weight_decay=0.0,
                kl_warmup_epochs=0,
                kl_weight=self.training_info.get("kl_weight", 1.0),
                accelerator=accelerator,
                devices=devices,
                progress_bar=progress_bar,
                callbacks=callbacks,
                max_time=max_time,
                precision=precision,
            )
        # only the new categories' weights trained: a known category stays as the reference left it
        mapped.trained_categories = {
            k: sorted(set(self.trained_categories.get(k, [])) | (set(mapped.trained_categories[k]) & set(added[k])))
            for k in self.setup.categorical_keys
        }
        mapped.training_info["map_query"] = info
        return mapped

    # ---------------------------------------------------------------- inference
    def _inputs(self, adata: AnnData | None) -> CellData:
        if adata is None:
            if self._data is None:
                msg = "this model holds no data (it was loaded without any); pass `adata`."
                raise ValueError(msg)
            return CellData(*self._own_data())
        return CellData(*self.setup.read(adata))

    @torch.inference_mode()
    def _map(self, data: CellData, fn, batch_size: int) -> tuple[np.ndarray, ...]:
        """Apply ``fn`` to the cells batch by batch; write what it returns (a tensor or a tuple) into float32 arrays.

        Each output is allocated once, at its final size, and filled chunk by chunk: no list of
        chunks and no second copy of anything cells × genes.
        """
        self.module.eval()
        device = next(self.module.parameters()).device
        n = len(data)
        outs: tuple[np.ndarray, ...] | None = None
        for start in range(0, n, batch_size):
            batch = data[np.arange(start, min(start + batch_size, n))]
            batch = {k: v.to(device) for k, v in batch.items()}
            res = fn(batch)
            res = res if isinstance(res, tuple) else (res,)
            if outs is None:
                outs = tuple(np.empty((n, *r.shape[1:]), dtype=np.float32) for r in res)
            for out, r in zip(outs, res, strict=True):
                out[start : start + len(r)] = r.cpu().numpy()
        return outs

    def get_latent(self, adata: AnnData | None = None, *, batch_size: int = 4096) -> np.ndarray:
        """Return the latent of each cell (cells × n_latent, float32): its posterior mean, on the decoder's axes.

        With ``rescale_latent`` (the default) the posterior mean is rotated and scaled so that
        Euclidean distances follow the decoded log-expression (see :class:`Autoencoder`); the
        first dimension changes expression most. Without it, the posterior mean itself.
        ``adata`` defaults to the training data. New data need every training gene (matched
        by name, in any order) and only batch categories seen in training.
        """
        self.check_latent_axes()
        data = self._inputs(adata)
        module = self.module
        return self._map(
            data, lambda b: module.latent(module.encode(b["x"], module.covariates(b), b["library"])[0]), batch_size
        )[0]

    def elbo(
        self, adata: AnnData | None = None, *, indices: np.ndarray | None = None, batch_size: int = 4096
    ) -> np.ndarray:
        """Per-cell evidence lower bound: ``log p(x | z)`` at the posterior mean of ``z``, minus the KL.

        A deterministic estimate of the ELBO (the decoder is evaluated at the posterior mean
        rather than at samples). Higher is better; comparable between count likelihoods on the
        same cells, e.g. on the held-out cells ``model.validation_indices``.

        Parameters
        ----------
        adata
            Defaults to the training data.
        indices
            Score only these cells: positions in ``adata``, or a boolean mask with one entry per cell.
        batch_size
            Cells per forward pass.
        """
        data = self._inputs(adata)
        if indices is not None:
            idx = np.asarray(indices)
            if idx.dtype == bool:
                if idx.shape != (data.X.shape[0],):
                    msg = (
                        f"a boolean `indices` has shape {idx.shape} but `adata` has {data.X.shape[0]} cells; pass a mask "
                        "with one entry per cell, or the positions of the cells to score."
                    )
                    raise ValueError(msg)
                idx = np.flatnonzero(idx)
            idx = idx.astype(int, copy=False)
            if idx.size == 0:  # e.g. the validation cells of a fit without validation
                return np.empty(0, dtype=np.float32)
            data = CellData(
                data.X[idx], data.library[idx].numpy().ravel(), data.cat[idx].numpy(), data.cont[idx].numpy()
            )

        def fn(b):
            out = self.module(b, kl_weight=1.0)
            return -(out.reconstruction + out.kl)

        return self._map(data, fn, batch_size)[0]

    def get_dropout_probability(self, adata: AnnData | None = None, *, batch_size: int = 4096) -> np.ndarray:
        """Probability that each count is a technical zero (ZINB only), cells × genes."""
        if not hasattr(self.module.likelihood, "dropout_logits"):
            msg = f"likelihood {self.config.likelihood!r} has no dropout probability; use likelihood='zinb'."
            raise ValueError(msg)
        data = self._inputs(adata)

        def fn(b):
            cov = self.module.covariates(b)
            z = self.module.encode(b["x"], cov, b["library"])[0]
            return torch.sigmoid(self.module.likelihood.dropout_logits(self.module.decoder(z, cov)))

        return self._map(data, fn, batch_size)[0]

    def get_denoised(
        self,
        adata: AnnData | None = None,
        *,
        genes: Sequence[str] | None = None,
        transform_batch: str | None = None,
        library_size: float = 1e4,
        batch_size: int = 4096,
    ) -> np.ndarray:
        """Denoised expression (cells × genes, float32).

        For count likelihoods this is the expected count at a library size of ``library_size``
        (the mean of the NB/Poisson part, without zero-inflation): expression per 10,000 counts
        by default, comparable across cells. For ``"gaussian"`` it is the decoder's mean in the
        units of the input (e.g. log-normalised). It is computed at the posterior mean.

        Parameters
        ----------
        adata
            Defaults to the training data.
        genes
            Only these genes (names, in this order): cells × ``len(genes)``, a fraction of the memory
            of all genes on a large data set. ``None`` gives every gene of the model.
        transform_batch
            Decode every cell as if it were in this batch (a category of ``batch_key``).
        library_size
            Library size to normalise to (count likelihoods).
        batch_size
            Cells per forward pass.
        """
        return self._latent_and_denoised(adata, genes, transform_batch, library_size, batch_size)[1]

    def _gene_positions(self, genes: Sequence[str] | None) -> torch.Tensor | None:
        if genes is None:
            return None
        if isinstance(genes, str):
            genes = [genes]
        pos = pd.Index(self.setup.var_names).get_indexer(pd.Index([str(g) for g in genes]))
        if (pos < 0).any():
            missing = [g for g, p in zip(genes, pos, strict=True) if p < 0]
            msg = f"{len(missing)} of the requested genes are not among the model's genes (e.g. {missing[:5]}); pick genes from `model.setup.var_names`."
            raise KeyError(msg)
        return torch.from_numpy(pos)

    def _latent_and_denoised(
        self,
        adata: AnnData | None,
        genes: Sequence[str] | None,
        transform_batch: str | None,
        library_size: float,
        batch_size: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the latent (as :meth:`get_latent`) and denoised expression in one pass (see :meth:`get_denoised`)."""
        pos = self._gene_positions(genes)
        data = self._inputs(adata)
        target = None
        if transform_batch is not None:
            key = self.setup.batch_key
            if key is None:
                msg = "transform_batch needs a model trained with batch_key; train with `batch_key=` or leave transform_batch=None."
                raise ValueError(msg)
            cats = self.setup.categories[key]
            if str(transform_batch) not in cats:
                msg = f"transform_batch={transform_batch!r} is not a category of {key!r}; pass one of {cats}."
                raise ValueError(msg)
            target = cats.index(str(transform_batch))
        factor = library_size if self.module.likelihood.counts else 1.0

        def fn(b):
            cov = self.module.covariates(b)
            z = self.module.encode(b["x"], cov, b["library"])[0]  # each cell encoded with its own batch
            if target is not None:
                cat = b["cat"].clone()
                cat[:, 0] = target
                cov = self.module.covariates({**b, "cat": cat})
            mean = self.module.normalized_mean(z, cov)
            if pos is not None:
                mean = mean.index_select(1, pos.to(mean.device))
            return self.module.latent(z), mean * factor

        return self._map(data, fn, batch_size)

    @torch.inference_mode()
    def decode(
        self, z: np.ndarray, *, batch: str | None = None, library_size: float = 1e4, batch_size: int = 4096
    ) -> np.ndarray:
        """Decode latent points into expression (as :meth:`get_denoised`), points × genes.

        ``z`` are points of the latent that :meth:`get_latent` returns (e.g. from
        ``adata.obsm["X_sclatent"]``, or between such points). Covariates are set to one condition for all points: ``batch`` (default: the first batch
        category), the first category of every other categorical covariate, and the training
        mean of every continuous covariate.
        """
        self.check_latent_axes()
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.config.n_latent:
            msg = f"z must be points × {self.config.n_latent}, got shape {z.shape}."
            raise ValueError(msg)
        cat = np.zeros((len(z), len(self.setup.categorical_keys)), dtype=np.int64)
        if batch is not None:
            if self.setup.batch_key is None:
                msg = "`batch` needs a model trained with batch_key; train with `batch_key=` or leave batch=None."
                raise ValueError(msg)
            cats = self.setup.categories[self.setup.batch_key]
            if str(batch) not in cats:
                msg = f"batch={batch!r} is not a category of {self.setup.batch_key!r}; pass one of {cats}."
                raise ValueError(msg)
            cat[:, 0] = cats.index(str(batch))
        cont = np.zeros((len(z), len(self.setup.continuous_covariate_keys)), dtype=np.float32)
        factor = library_size if self.module.likelihood.counts else 1.0
        self.module.eval()
        device = next(self.module.parameters()).device
        out = []
        for s in range(0, len(z), batch_size):
            b = {
                "x": torch.from_numpy(z[s : s + batch_size]).to(device),
                "cat": torch.from_numpy(cat[s : s + batch_size]).to(device),
                "cont": torch.from_numpy(cont[s : s + batch_size]).to(device),
            }
            zt = self.module.latent_to_mean(b["x"])
            out.append((self.module.normalized_mean(zt, self.module.covariates(b)) * factor).cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Save to directory ``path``: ``config.json`` (configuration, genes, categories, history) and ``model.pt`` (tensors).

        ``model.pt`` holds only tensors and plain containers, so it loads with ``torch.load(..., weights_only=True)``.
        """
        write_model(path, self._meta(), self.module, kind="Autoencoder", overwrite=overwrite)

    def _meta(self) -> dict:
        """Return what :meth:`save` writes to ``config.json``."""
        return {
            "config": self.config.to_dict(),
            "setup": self.setup.to_dict(),
            "random_state": self.random_state,
            "is_trained": self.is_trained,
            "latent_axes_fitted": self.latent_axes_fitted,
            "trained_epochs": self.trained_epochs,
            "trained_categories": self.trained_categories,
            "training_info": self.training_info,
            "train_indices": self.train_indices.tolist(),
            "validation_indices": self.validation_indices.tolist(),
            "history": history_to_json(self.history),
        }

    @classmethod
    def load(cls, path: str | Path, adata: AnnData | None = None) -> Autoencoder:
        """Load a model saved with :meth:`save`; ``adata`` (optional) becomes its default data.

        A checkpoint (``checkpoint_dir=`` of :meth:`fit`) is saved before its latent's axes are
        set (``rescale_latent``): load it with the AnnData it was trained on, and they are set
        from its training cells, as the finished fit sets them.
        """
        meta, state = read_model(path, kind="Autoencoder")
        self = cls.__new__(cls)
        self.config = AutoencoderConfig.from_dict(meta["config"])
        self.setup = DataSetup(**meta["setup"])
        self.random_state = meta["random_state"]
        self.module = AutoencoderModule(self.config)
        self.module.load_state_dict(state)
        self.module.eval()
        self.is_trained = meta["is_trained"]
        self.trained_epochs = int(meta.get("trained_epochs", 0))
        # files written before this was recorded: a trained model's categories all count as trained
        every = {k: list(self.setup.categories[k]) for k in self.setup.categorical_keys}
        self.trained_categories = meta.get("trained_categories", every if self.is_trained else {k: [] for k in every})
        self.training_info = meta["training_info"]
        self.train_indices = np.asarray(meta.get("train_indices", []), dtype=int)
        self.validation_indices = np.asarray(meta.get("validation_indices", []), dtype=int)
        self.history = history_from_json(meta["history"])
        self._data = self.setup.read(adata) if adata is not None else None
        # files without the entry: sclatent 0.1's, whose latent is the posterior mean
        self.latent_axes_fitted = bool(meta.get("latent_axes_fitted", True))
        if self._data is not None and not self.latent_axes_fitted and self.is_trained and self.config.rescale_latent:
            # a checkpoint: the axes from its training cells, as the finished fit sets them
            n_cells = len(self.train_indices) + len(self.validation_indices)
            saved = meta.get("data_fingerprint")
            if saved is not None and len(saved) == 2:  # written before the cells' order was recorded: shape and sum
                now = matrix_fingerprint(self._data[0])
                now = saved if now is None else [list(now[0]), now[1]]
            else:
                now = cells_fingerprint(*self._data[:2])
            same = self._data[0].shape[0] == n_cells and (saved is None or now == saved)
            if not same:
                msg = (
                    f"{path} is a checkpoint whose latent axes are set from its training data ({n_cells} cells), "
                    f"but `adata` holds other data ({self._data[0].shape[0]} cells; other counts, or the cells in "
                    "another order); pass the AnnData it was trained on, with its cells in the same order."
                )
                raise ValueError(msg)
            self._fit_latent_axes(CellData(*self._data), self.train_indices)
        return self
