from __future__ import annotations

import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from scanpy import logging as logg

from .. import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import timedelta
    from pathlib import Path

    from anndata import AnnData
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.strategies import Strategy

    from ..models import Autoencoder


#: Largest denoised layer (bytes of float32) that :func:`sclatent.tl.autoencode` writes by default.
DENOISE_MAX_BYTES = 2**30


def _versions() -> dict[str, str]:
    versions = {"sclatent": __version__}
    for dist in ("torch", "scanpy", "anndata", "scvi-tools", "lightning"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:  # e.g. pytorch-lightning installed instead of lightning
            versions[dist] = "not installed"
    return versions


def _warn_overwrite(adata: AnnData, key_added: str, *, denoised: bool) -> None:
    """Warn about an earlier run's results under ``key_added``: those this run replaces, and a denoised layer it does not."""
    layer = f"{key_added}_denoised"
    slots = [("obsm", f"X_{key_added}"), ("uns", key_added)] + ([("layers", layer)] if denoised else [])
    clashes = [f"{slot}[{key!r}]" for slot, key in slots if key in getattr(adata, slot)]
    if clashes:
        warnings.warn(
            f"overwriting {', '.join(clashes)} from an earlier run; pass another `key_added` to keep both.",
            UserWarning,
            stacklevel=3,
        )
    if not denoised and layer in adata.layers:
        warnings.warn(
            f"layers[{layer!r}] is from an earlier run and no longer matches obsm['X_{key_added}']; this run does "
            f"not write it. Delete it (`del adata.layers[{layer!r}]`) or pass another `key_added`.",
            UserWarning,
            stacklevel=3,
        )


def _groups(adata: AnnData, key: str):
    if key not in adata.obs:
        msg = f"validation_groups_key={key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)}); pass an existing column, e.g. the donor."
        raise KeyError(msg)
    return adata.obs[key]


def autoencode(
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
    max_epochs: int | None = None,
    early_stopping: bool = True,
    validation_fraction: float = 0.1,
    validation_groups_key: str | None = None,
    batch_size: int = 256,
    learning_rate: float = 2e-3,
    weight_decay: float = 1e-6,
    kl_warmup_epochs: int | None = None,
    kl_weight: float = 1.0,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    strategy: str | Strategy = "auto",
    num_nodes: int = 1,
    random_state: int = 0,
    key_added: str = "sclatent",
    denoise: bool | None = None,
    transform_batch: str | None = None,
    callbacks: Sequence[Callback] = (),
    max_time: str | timedelta | None = None,
    checkpoint_dir: str | Path | None = None,
    precision: str | None = None,
    copy: bool = False,
    progress_bar: bool = True,
    return_model: bool = False,
) -> AnnData | Autoencoder | tuple[AnnData, Autoencoder] | None:
    """Train a (variational) autoencoder on counts and store its latent space and denoised expression.

    The model (:class:`sclatent.models.Autoencoder`) feeds the batch and other covariates to the
    encoder and the decoder, so the latent space is freed of the batch effect. Its observation
    model is a zero-inflated negative binomial by default. Use the latent as you would PCA:
    ``sc.pp.neighbors(adata, use_rep="X_sclatent")``, then Leiden and UMAP.

    Parameters
    ----------
    adata
        Annotated data matrix, cells × genes. Subset to highly variable genes first
        (e.g. 2,000), as for scVI. An AnnData opened with ``backed="r"`` is trained from disk,
        out of core: chunks of consecutive cells are read in a random order and shuffled in
        memory a window at a time (:class:`~sclatent.train.DiskBatches`), so memory does not
        grow with the number of cells (see "Scaling out" in the docs).
    layer
        Layer holding the data; ``None`` uses ``adata.X``. Count likelihoods need raw counts;
        ``likelihood="gaussian"`` expects log-normalised values.
    batch_key
        Column of ``adata.obs`` with each cell's batch (technology, plate, donor…).
    categorical_covariate_keys
        Further categorical ``adata.obs`` columns to condition on.
    continuous_covariate_keys
        Numeric ``adata.obs`` columns to condition on (e.g. percent mitochondrial counts).
    likelihood
        ``"zinb"`` (zero-inflated negative binomial), ``"nb"``, ``"poisson"`` or ``"gaussian"``,
        or a name registered with :func:`sclatent.module.register_likelihood`.
    n_latent
        Dimensions of the latent space. The default (20, and ``normalize_input=True``) was chosen
        by the defaults study in the benchmarks, leave-one-data-set-out over five data sets;
        sclatent 0.1 used 10 and raw ``log1p`` input.
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
        Feed the batch and covariates to the encoder as well as the decoder (``True``), or
        only to the decoder (``False``, scvi-tools' default).
    normalize_input
        Give the encoder log-normalised counts (each cell scaled to 10,000 counts, then
        ``log1p``) instead of ``log1p`` of the raw counts (``False``, sclatent 0.1's behaviour).
        The decoder gets the library size either way. Count likelihoods only.
    rescale_latent
        Write the latent on the decoder's axes: each cell's posterior mean, rotated and scaled
        so that Euclidean distances between cells measure how much their decoded
        log-expression differs (the decoder's pull-back metric, averaged over cells), with the
        dimensions ordered by how much expression they change, like principal components.
        Without it the KL term makes every latent direction count the same, whether it changes
        many genes or almost none. ``False`` writes the posterior mean itself (sclatent 0.1).
    max_epochs
        Upper bound on epochs; by default chosen from the number of cells
        (:func:`sclatent.models.default_max_epochs`: 400 for ≤ 6,250 cells, down to 20 for 125,000 or more).
    early_stopping
        Stop when the loss on held-out cells stops improving and restore the best weights.
    validation_fraction
        Fraction of cells held out for validation.
    validation_groups_key
        Column of ``adata.obs`` with groups (e.g. donors) to hold out whole: held-out groups
        take at least ``validation_fraction`` of the cells, and no group is both trained on and
        held out, so that early stopping measures how the model does on donors it has not seen.
        The held-out groups are in ``uns[key_added]["training"]["validation_groups"]``.
    batch_size
        Cells per minibatch.
    learning_rate
        Adam's learning rate.
    weight_decay
        Adam's weight decay.
    kl_warmup_epochs
        Epochs over which the KL weight rises linearly from 0 to 1 (``variational=True``); by
        default a quarter of ``max_epochs``, at most 25.
    kl_weight
        The weight of the KL term once warm-up is over (1: the evidence lower bound). Below 1 the
        latent keeps more of what tells cells apart and corrects batches a little less.
    accelerator
        Lightning's accelerator: ``"auto"`` uses a GPU when there is one, ``"cpu"`` or ``"gpu"``.
    devices
        Lightning's devices. ``"auto"`` is one device unless ``strategy`` or ``num_nodes`` asks
        for distributed training (then every device Lightning finds).
    strategy
        Lightning's strategy: ``"auto"`` (one process unless ``devices`` > 1), or ``"ddp"`` with ``devices=N`` (and
        ``num_nodes``) for distributed data parallel training, run as a script (``python
        script.py``, ``torchrun`` or ``srun``): the script runs once per process, and every
        process ends with the same model and results; write files from one of them
        (``adata.uns[key_added]["training"]["global_rank"] == 0``). See the "Scaling out" page.
    num_nodes
        Machines taking part in distributed training.
    random_state
        Seed of the weights, validation split, minibatch order and sampling noise. The same seed
        gives the same latent on the CPU.
    key_added
        Name under which the results are stored.
    denoise
        Also write the denoised layer (cells × genes, dense float32). ``None`` (default) writes it
        while it takes at most 1 GiB (about 130,000 cells × 2,000 genes)
        and otherwise says, at info level, how to get it: ``denoise=True`` forces it;
        :func:`sclatent.tl.denoise` or :meth:`~sclatent.models.Autoencoder.get_denoised` with
        ``genes=`` give a subset of genes.
    transform_batch
        Denoise as if every cell were in this batch.
    callbacks
        Extra Lightning callbacks.
    max_time
        Stop training after this long (``"DD:HH:MM:SS"`` or a :class:`~datetime.timedelta`);
        the results are then from the best weights so far and marked incomplete.
    checkpoint_dir
        Save the best model so far to this directory during training (see
        :meth:`sclatent.models.Autoencoder.fit`).
    precision
        ``"32-true"`` (float32) or ``"bf16-mixed"``: matrix products in bfloat16, with weights,
        likelihood and loss in float32. Meant for CPUs with AVX512-BF16 or AMX (``lscpu`` lists
        ``avx512_bf16`` or ``amx_bf16``; 1.1-1.5× faster per epoch on one) and GPUs with
        bfloat16 units; elsewhere bfloat16 is emulated. Results differ slightly from float32's.
        ``None`` (the default) trains in bfloat16 from 50,000 cells on a CPU with AVX512-BF16 or
        AMX, and in float32 otherwise (:func:`sclatent.models.default_precision`).
    copy
        Return a copy instead of writing to ``adata``.
    progress_bar
        Show a progress bar over epochs.
    return_model
        Also return the trained :class:`~sclatent.models.Autoencoder`.

    Returns
    -------
    ``None``, or a copy of ``adata`` with ``copy=True``; the model with ``return_model=True``
    (a tuple ``(adata, model)`` with both). Sets the following fields:

    ``adata.obsm['X_{key_added}']`` : :class:`numpy.ndarray` (dtype ``float32``)
        The latent of each cell: its posterior mean, on the decoder's axes with ``rescale_latent``.
    ``adata.layers['{key_added}_denoised']`` : :class:`numpy.ndarray` (dtype ``float32``)
        Denoised expression: expected counts per 10,000 (count likelihoods; the negative
        binomial or Poisson mean, without zero-inflation), or the decoded mean (gaussian).
        Not written with ``denoise=False``, nor by default above 1 GiB.
    ``adata.uns['{key_added}']['params']`` : :class:`dict`
        The arguments and model configuration.
    ``adata.uns['{key_added}']['history']`` : :class:`dict`
        ``train_loss`` and ``validation_loss`` per epoch (negative ELBO per cell).
    ``adata.uns['{key_added}']['training']`` : :class:`dict`
        Epochs run, best epoch, why it stopped (``stop_reason``: ``"early_stopping"``,
        ``"max_epochs"``, ``"interrupted"``, ``"max_time"`` or ``"callback"``, when one of
        ``callbacks`` stopped it), whether training was ``complete``, time, cells used.
    ``adata.uns['{key_added}']['versions']`` : :class:`dict`
        Versions of sclatent, torch, scanpy, anndata, scvi-tools and lightning.

    Examples
    --------
    >>> import scanpy as sc
    >>> import sclatent as sl
    >>> adata = sl.datasets.pbmc3k()
    >>> sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=2000, subset=True)  # doctest: +SKIP
    >>> sl.tl.autoencode(adata)  # doctest: +SKIP
    >>> sc.pp.neighbors(adata, use_rep="X_sclatent")  # doctest: +SKIP
    """
    from ..models import Autoencoder  # imports torch and Lightning on first use

    groups = None if validation_groups_key is None else _groups(adata, validation_groups_key)

    start = logg.info(f"training a {likelihood} {'variational ' if variational else ''}autoencoder")
    model = Autoencoder(
        adata,
        layer=layer,
        batch_key=batch_key,
        categorical_covariate_keys=categorical_covariate_keys,
        continuous_covariate_keys=continuous_covariate_keys,
        likelihood=likelihood,
        n_latent=n_latent,
        n_hidden=n_hidden,
        n_layers=n_layers,
        dropout_rate=dropout_rate,
        variational=variational,
        norm=norm,
        encode_covariates=encode_covariates,
        normalize_input=normalize_input,
        rescale_latent=rescale_latent,
        random_state=random_state,
    )
    if transform_batch is not None and (
        batch_key is None or str(transform_batch) not in model.setup.categories[batch_key]
    ):
        msg = f"transform_batch={transform_batch!r} must be a category of batch_key={batch_key!r}."
        raise ValueError(msg)
    logg.debug(f"    {adata.n_obs} cells × {adata.n_vars} genes, {model!r}")
    model.fit(
        max_epochs=max_epochs,
        early_stopping=early_stopping,
        validation_fraction=validation_fraction,
        validation_groups=groups,
        batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        kl_warmup_epochs=kl_warmup_epochs,
        kl_weight=kl_weight,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=num_nodes,
        progress_bar=progress_bar,
        callbacks=callbacks,
        max_time=max_time,
        checkpoint_dir=checkpoint_dir,
        precision=precision,
    )
    if denoise is None:
        denoise = adata.n_obs * adata.n_vars * 4 <= DENOISE_MAX_BYTES
        if not denoise:
            logg.info(
                f"    not writing layers[{key_added + '_denoised'!r}]: {adata.n_obs} cells × {adata.n_vars} genes would take "
                f"{adata.n_obs * adata.n_vars * 4 / 2**30:.1f} GiB. Pass `denoise=True` to write it anyway, or get some "
                "genes with `sl.tl.denoise(adata, model=model, genes=[...])` (`return_model=True` gives the model)."
            )
    if denoise:  # one pass over the data for both
        latent, denoised = model._latent_and_denoised(None, None, transform_batch, 1e4, 4096)
    else:
        latent, denoised = model.get_latent(), None

    adata = adata.copy() if copy else adata
    _warn_overwrite(adata, key_added, denoised=denoised is not None)
    adata.obsm[f"X_{key_added}"] = latent
    if denoised is not None:
        adata.layers[f"{key_added}_denoised"] = denoised
    params = {
        "layer": layer,
        "batch_key": batch_key,
        "categorical_covariate_keys": list(categorical_covariate_keys or []),
        "continuous_covariate_keys": list(continuous_covariate_keys or []),
        "transform_batch": transform_batch,
        "denoise": bool(denoise),
        "random_state": random_state,
        **model.config.to_dict(),
    }
    info = model.training_info
    adata.uns[key_added] = {
        "params": {k: v for k, v in params.items() if v is not None and v != []},
        "history": {k: model.history[k].to_numpy() for k in model.history},
        "training": info,
        "versions": _versions(),
    }
    logg.info(
        f"    finished after {info['n_epochs']} epochs (best {info['best_epoch']})",
        time=start,
        deep=(
            f"added\n    'X_{key_added}', latent (adata.obsm)\n"
            + (f"    '{key_added}_denoised', denoised expression (adata.layers)\n" if denoise else "")
            + f"    '{key_added}', parameters and history (adata.uns)"
        ),
    )
    if return_model:
        return (adata, model) if copy else model
    return adata if copy else None
