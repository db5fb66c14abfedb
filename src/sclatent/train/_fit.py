"""The training loop every model class shares: Lightning's trainer with sclatent's callbacks, quiet and interruptible."""

from __future__ import annotations

import copy
import ctypes
import logging
import os
import platform
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import pandas as pd
import torch

from ._callbacks import BestWeights, EpochProgressBar, WarmEarlyStopping
from ._data import CellData, check_precision, make_loader

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from datetime import timedelta

    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.strategies import Strategy


#: Cells per validation batch: larger batches are not faster, and a batch's likelihood terms
#: (cells × genes, several of them) set the peak memory of training (about 0.3 GB more at 4,096).
VALIDATION_BATCH_SIZE = 1024


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's start-up chatter and the warnings that do not apply to in-memory batches."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
            warnings.filterwarnings("ignore", message=".*The number of training batches.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
            # data on disk are batched in the main process (num_workers=0), so their batch count is exact
            warnings.filterwarnings("ignore", message=r".*IterableDataset. has .__len__. defined.*")
            # map_query keeps the normalisation layers in evaluation mode on purpose
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
            # under distributed training the plan logs losses already summed over every process
            warnings.filterwarnings("ignore", message=r".*sync_dist=True.*")
            # validation_fraction=0 trains without validation by choice
            warnings.filterwarnings("ignore", message=r".*validation_step. but have no .val_dataloader.*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


#: glibc's ``mallopt`` settings for training: buffers below 32 MiB come from the heap, and up to
#: 64 MiB of freed heap is kept (the values glibc's own dynamic thresholds end at).
_MALLOPT = {"M_MMAP_THRESHOLD": (-3, 32 * 2**20), "M_TRIM_THRESHOLD": (-1, 64 * 2**20)}
_MALLOC_STEADY: bool | None = None  # not tried yet


def _steady_malloc() -> bool:
    """Stop glibc from returning a training step's buffers to the kernel after every step.

    A step allocates and frees tensors of a few MiB (a batch of 256 cells × 2,000 genes in
    float32 is 2 MiB). glibc's default malloc can hand such memory back to the kernel on free
    (``munmap`` or a trim of the heap) and fault it in again on the next step: at 100,000 cells
    that was up to 3.5 million page faults and a third more time per epoch, varying from run to
    run. This fixes the thresholds at the values glibc's dynamic ones grow to
    (:data:`_MALLOPT`), so the buffers stay in the process between steps.

    Applied once per process, on Linux with glibc only, and the settings stay for the rest of
    the process. Never applied when the user tuned malloc (a ``MALLOC_…_`` environment variable,
    ``glibc.malloc`` in ``GLIBC_TUNABLES``) or set ``SCLATENT_MALLOPT=0``. Returns whether the
    settings are in effect (with jemalloc or tcmalloc preloaded they are set but unused).
    """
    global _MALLOC_STEADY
    if _MALLOC_STEADY is None:
        _MALLOC_STEADY = False
        user_set = (
            any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ)
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")
            or os.environ.get("SCLATENT_MALLOPT") == "0"
        )
        if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc" and not user_set:
            try:
                libc = ctypes.CDLL("libc.so.6")
                _MALLOC_STEADY = all(libc.mallopt(param, value) == 1 for param, value in _MALLOPT.values())
            except (OSError, AttributeError):
                pass
    return _MALLOC_STEADY


def _warm_up(module: torch.nn.Module, batch: dict[str, torch.Tensor], precision: str = "32-true") -> None:
    """One throw-away training step on a copy of the module, before the seeded run.

    The first matrix products of a process can take other code paths in Intel MKL than later
    ones (seen as last-bit differences that training amplifies), which made the first fit of a
    process differ from later fits with the same seed. After this step, every fit takes the same
    paths. The module, the random state and the user's data are left as they were.
    """
    with torch.random.fork_rng(devices=[]):
        clone = copy.deepcopy(module)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = clone(batch, kl_weight=1.0).loss
        loss.backward()


#: Fraction of a GPU's free memory that the training data may take to be held on it.
GPU_DATA_FRACTION = 0.5


def _place_data(data: CellData, device: torch.device) -> bool:
    """Move the training data to a GPU when they fit in :data:`GPU_DATA_FRACTION` of its free memory.

    Batches are then built on the GPU itself. Returns whether the data are on ``device``.
    """
    if device.type == "cpu":
        return True
    if device.type != "cuda" or not data.in_tensors:
        return False
    free, _ = torch.cuda.mem_get_info(device)
    if data.nbytes > GPU_DATA_FRACTION * free:
        return False
    data.to(device)
    return True


@contextmanager
def _graceful_interrupt(trainer: L.Trainer) -> Iterator[dict]:
    """Turn Ctrl+C (or Jupyter's interrupt) during fit into a graceful stop.

    Lightning's own handling of ``KeyboardInterrupt`` ends the process (``sys.exit``) and leaves
    SIGINT ignored, which in a notebook would lose the results and the next Ctrl+C. Here the
    first interrupt asks the trainer to stop after the current step; the previous handler is
    restored afterwards.
    """
    state = {"interrupted": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        state["interrupted"] = True
        trainer.should_stop = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class FitOutcome:
    """What :func:`~sclatent.train.run_fit` reports about a finished fit."""

    #: ``train_loss`` and ``validation_loss`` per epoch (NaN where there was no validation).
    history: pd.DataFrame
    #: Epochs run.
    n_epochs: int
    #: The epoch whose weights the module holds at the end.
    best_epoch: int
    #: ``"early_stopping"``, ``"max_epochs"``, ``"max_time"``, ``"interrupted"`` or ``"callback"`` (a user's
    #: callback stopped it).
    stop_reason: str
    #: Seconds spent in the trainer.
    seconds: float
    #: How the training batches were drawn: at random from memory, or chunk by chunk from disk.
    batches: str = "cells drawn at random from memory"
    #: Processes that trained together (distributed training), and this process's rank among them.
    world_size: int = 1
    global_rank: int = 0


#: What to do instead of a distributed launcher that trains in other processes than the caller's.
_DDP_SCRIPT_ADVICE = (
    "Put the training in a script and run it with `python script.py` (strategy='ddp', devices=N), "
    "`torchrun --nproc_per_node=N script.py` or `srun` (see the 'Scaling out' page of the docs); "
    "or train in one process here (devices=1)."
)


def _check_launcher(trainer: L.Trainer) -> None:
    """Refuse launchers that train in spawned or forked processes: the trained model would stay there."""
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    if trainer.world_size > 1 and isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        msg = (
            f"strategy={type(trainer.strategy).__name__} with start method "
            f"{trainer.strategy.launcher._start_method!r} trains in new processes, and their history, early "
            f"stopping and best weights would not come back to this one; run the training as a script instead. {_DDP_SCRIPT_ADVICE}"
        )
        raise ValueError(msg)


def _check_devices(accelerator: str, devices, num_nodes: int) -> None:
    """Raise when ``devices`` asks for more GPUs or CPU processes than this machine has, before Lightning starts any."""
    if not isinstance(num_nodes, int | np.integer) or num_nodes < 1:
        msg = f"num_nodes must be an integer ≥ 1, got {num_nodes!r}; pass the number of machines that train together."
        raise ValueError(msg)
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if not isinstance(devices, int | np.integer) or devices < 1:
        return  # "auto", -1 or a list of device ids: Lightning checks those
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if gpu:
        have, what = torch.cuda.device_count() or int(torch.backends.mps.is_available()), "GPUs"
        if have == 0:
            msg = f"accelerator={accelerator!r} with devices={devices} asks for GPUs, but torch sees none; pass accelerator='cpu', or install a CUDA build of torch."
            raise ValueError(msg)
    elif accelerator in ("cpu", "auto"):
        have, what = os.cpu_count() or 1, "CPU cores (one process each)"
    else:
        return
    if devices > have:
        msg = f"devices={devices} asks for more than this machine has: {have} {what}; pass devices={have} or fewer (with num_nodes for more machines)."
        raise ValueError(msg)


def _trainer(**kwargs) -> L.Trainer:
    """Build the trainer; Lightning's refusal of multi-process training in a notebook becomes sclatent's advice."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        trainer = L.Trainer(**kwargs)
    except MisconfigurationException as e:
        if "interactive" not in str(e):
            raise
        msg = f"training in several processes cannot start from a notebook or an interactive session; run it as a script. {_DDP_SCRIPT_ADVICE}"
        raise ValueError(msg) from None
    _check_launcher(trainer)
    return trainer


def run_fit(
    plan: L.LightningModule,
    data: CellData,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    max_epochs: int,
    batch_size: int,
    seed: int,
    early_stopping: bool,
    early_stopping_patience: int,
    start_epoch: int = 0,
    on_improve: Callable[[int], None] | None = None,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    strategy: str | Strategy = "auto",
    num_nodes: int = 1,
    progress_bar: bool = True,
    callbacks: Sequence[Callback] = (),
    max_time: str | timedelta | None = None,
    precision: str = "32-true",
    divergence_advice: str = "",
) -> FitOutcome:
    """Train ``plan`` (a :class:`~sclatent.train.TrainingPlan` or one like it, whose ``module`` takes a batch dict) on the cells ``train_idx``.

    Shared by every model class, so that each gets the same handling: early stopping on the
    loss of ``val_idx`` (not before ``start_epoch``) with the best weights restored, ``on_improve``
    called at each new best (checkpoints), a graceful stop on Ctrl+C or ``max_time`` (with a
    warning), a clear :class:`FloatingPointError` when the loss diverges (``divergence_advice``
    is added to it), a warm-up that makes reruns bit-identical, data held on the GPU when they
    fit, and no chatter from Lightning. The module ends on the CPU, in evaluation mode.

    Distributed data parallel training (``strategy="ddp"``, ``devices=N``, ``num_nodes=M``, or
    started by ``torchrun``/``srun``) runs through Lightning: every process calls this function
    (Lightning starts the others by running the same script), takes a disjoint share of the
    training and validation cells in the same number of batches, and the losses are summed over
    all processes, so early stopping stops every rank at the same epoch and every rank ends with
    the same weights. Launchers that spawn or fork the processes (``"ddp_spawn"``,
    ``"ddp_notebook"``) are refused before training: the results would stay in those processes.
    Each rank draws its own dropout and sampling noise (seed + rank).

    ``precision="bf16-mixed"`` runs the matrix products in bfloat16 (Lightning's autocast) while
    the weights, the optimiser, the likelihood and the loss stay in float32; modules return
    their outputs in float32 (see :func:`sclatent.nn.full_precision`).
    """
    module = plan.module
    n_val = len(val_idx)
    best = BestWeights(on_improve=on_improve, restore=early_stopping) if early_stopping or on_improve else None
    cbs: list[Callback] = [*([EpochProgressBar()] if progress_bar else []), *callbacks]
    stopper = WarmEarlyStopping(
        "validation_loss", patience=early_stopping_patience, mode="min", start_epoch=start_epoch
    )
    cbs += [best] if best is not None else []
    cbs += [stopper] if early_stopping else []

    check_precision(precision)
    _check_devices(accelerator, devices, num_nodes)
    _steady_malloc()
    if devices == "auto" and strategy == "auto" and num_nodes == 1:
        devices = 1  # Lightning's "auto" takes every GPU, and starts the script again on each: only when asked
    module.train()  # a loaded model is in eval mode
    _warm_up(module, data[train_idx[: min(batch_size, len(train_idx))]], precision)
    start = time.perf_counter()
    with _quiet_lightning(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        trainer = _trainer(
            max_epochs=int(max_epochs),
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            num_nodes=int(num_nodes),
            use_distributed_sampler=False,  # the loaders below give each rank its share
            callbacks=cbs,
            logger=False,
            enable_checkpointing=any(type(cb).__name__ == "ModelCheckpoint" for cb in callbacks),
            enable_model_summary=False,
            enable_progress_bar=progress_bar,
            num_sanity_val_steps=0,
            limit_val_batches=1.0 if n_val else 0,
            deterministic=False,
            max_time=max_time,
            precision=precision,
        )
        ranks = {"rank": trainer.global_rank, "world_size": trainer.world_size}
        if trainer.world_size > 1:
            torch.manual_seed(seed + trainer.global_rank)  # each rank its own noise; the same weights (rank 0's)
            _check_shares(len(train_idx), n_val, trainer.world_size, batch_size)
        on_device = _place_data(data, trainer.strategy.root_device)
        pin = trainer.strategy.root_device.type == "cuda" and not on_device
        train_loader = make_loader(
            data, train_idx, min(batch_size, len(train_idx)), shuffle=True, seed=seed, pin_memory=pin, **ranks
        )
        val_loader = (
            make_loader(data, val_idx, VALIDATION_BATCH_SIZE, shuffle=False, pin_memory=pin, **ranks) if n_val else None
        )
        try:
            with _graceful_interrupt(trainer) as interrupt:
                trainer.fit(plan, train_dataloaders=train_loader, val_dataloaders=val_loader)
            if trainer.world_size > 1:
                _sync_buffers(trainer, module)
        except FloatingPointError as e:
            module.to("cpu").eval()
            kept = (
                f"the weights of its best epoch ({best.best_epoch})"
                if best and best.best_epoch is not None
                else "the last finite weights"
            )
            what = str(e).split(";")[0]  # the plan's own advice follows here
            msg = (
                f"Training diverged: {what}. Try a lower learning_rate (e.g. {plan.learning_rate / 10:g}), check the "
                f"data for extreme values or wrong units{divergence_advice}. The model keeps {kept}."
            )
            raise FloatingPointError(msg) from None
    seconds = time.perf_counter() - start
    module.to("cpu").eval()

    n_epochs = len(plan.history["train_loss"])
    history = history_frame(plan.history, n_epochs)
    if interrupt["interrupted"]:
        stop_reason = "interrupted"
    elif early_stopping and stopper.stopped_epoch > 0:
        stop_reason = "early_stopping"
    elif _time_is_up(trainer):  # also when it ran out in the last epoch, which then ended early
        stop_reason = "max_time"
    elif n_epochs < max_epochs:
        stop_reason = "callback"  # a user's callback set trainer.should_stop
    else:
        stop_reason = "max_epochs"
    if stop_reason in ("interrupted", "max_time", "callback"):
        warnings.warn(
            f"training stopped early ({stop_reason}) after {n_epochs} epochs; the results are from the best "
            "weights so far and are marked incomplete.",
            UserWarning,
            stacklevel=3,
        )
    best_epoch = int(best.best_epoch) if best is not None and best.best_epoch is not None else n_epochs - 1
    batches = getattr(train_loader.dataset, "randomness", FitOutcome.batches)
    if trainer.world_size > 1:
        batches += f"; each of {trainer.world_size} processes takes a disjoint share of the cells"
    return FitOutcome(
        history, n_epochs, best_epoch, stop_reason, seconds, batches, trainer.world_size, trainer.global_rank
    )


def _time_is_up(trainer: L.Trainer) -> bool:
    """Whether the trainer's ``max_time`` ran out and stopped training.

    Lightning's timer checks the time after each training step and then asks the trainer to
    stop; a run whose last validation alone passed the limit did every step, and is not cut short.
    """
    timer = next((c for c in trainer.callbacks if isinstance(c, L.pytorch.callbacks.Timer)), None)
    remaining = timer.time_remaining("train") if timer is not None else None
    return remaining is not None and remaining <= 0 and trainer.should_stop


def history_frame(hist: dict[str, list[float]], n_epochs: int) -> pd.DataFrame:
    """Return the first ``n_epochs`` epochs of a plan's ``history`` as a frame; a loss not (yet) computed is NaN.

    The validation loss of an epoch is known before its training loss (Lightning validates before
    the training epoch ends), and is missing without validation.
    """

    def column(values: list[float]) -> list[float]:
        return list(values[:n_epochs]) + [np.nan] * (n_epochs - len(values))

    return pd.DataFrame(
        {"train_loss": column(hist["train_loss"]), "validation_loss": column(hist["validation_loss"])},
        index=pd.RangeIndex(n_epochs, name="epoch"),
    )


def _check_shares(n_train: int, n_val: int, world_size: int, batch_size: int) -> None:
    """Raise unless every process gets two training cells and, with validation, one validation cell, in batches of two or more."""
    if n_train < 2 * world_size or 0 < n_val < world_size:
        msg = (
            f"{n_train} training and {n_val} validation cells cannot be shared among {world_size} processes "
            f"(each needs two training cells and one validation cell); use fewer devices or processes."
        )
        raise ValueError(msg)
    if batch_size < 3:
        msg = f"batch_size={batch_size} is too small for distributed training: sharing the cells evenly could leave a batch of one cell; pass batch_size ≥ 3."
        raise ValueError(msg)


def _sync_buffers(trainer: L.Trainer, module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm statistics): each rank's last training step updated its own.

    The weights are not touched: DDP keeps them the same on every rank by itself.
    """
    buffers = {k: v.detach().cpu() for k, v in module.named_buffers()}
    for k, v in trainer.strategy.broadcast(buffers, src=0).items():
        module.get_buffer(k).copy_(v)
