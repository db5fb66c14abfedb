"""The training loop every model class shares: Lightning's trainer with sclatent's callbacks, quiet and interruptible."""

from __future__ import annotations

import copy
import logging
import signal
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
from ._data import CellData, make_loader

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from datetime import timedelta

    from lightning.pytorch.callbacks import Callback


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
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _warm_up(module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """One throw-away training step on a copy of the module, before the seeded run.

    The first matrix products of a process can take other code paths in Intel MKL than later
    ones (seen as last-bit differences that training amplifies), which made the first fit of a
    process differ from later fits with the same seed. After this step, every fit takes the same
    paths. The module, the random state and the user's data are left as they were.
    """
    with torch.random.fork_rng(devices=[]):
        clone = copy.deepcopy(module)
        clone(batch, kl_weight=1.0).loss.backward()


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
    #: ``"early_stopping"``, ``"max_epochs"``, ``"max_time"`` or ``"interrupted"``.
    stop_reason: str
    #: Seconds spent in the trainer.
    seconds: float
    #: How the training batches were drawn: at random from memory, or chunk by chunk from disk.
    batches: str = "cells drawn at random from memory"


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
    progress_bar: bool = True,
    callbacks: Sequence[Callback] = (),
    max_time: str | timedelta | None = None,
    divergence_advice: str = "",
) -> FitOutcome:
    """Train ``plan`` (a :class:`~sclatent.train.TrainingPlan` or one like it, whose ``module`` takes a batch dict) on the cells ``train_idx``.

    Shared by every model class, so that each gets the same handling: early stopping on the
    loss of ``val_idx`` (not before ``start_epoch``) with the best weights restored, ``on_improve``
    called at each new best (checkpoints), a graceful stop on Ctrl+C or ``max_time`` (with a
    warning), a clear :class:`FloatingPointError` when the loss diverges (``divergence_advice``
    is added to it), a warm-up that makes reruns bit-identical, data held on the GPU when they
    fit, and no chatter from Lightning. The module ends on the CPU, in evaluation mode.
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

    module.train()  # a loaded model is in eval mode
    _warm_up(module, data[train_idx[: min(batch_size, len(train_idx))]])
    start = time.perf_counter()
    with _quiet_lightning(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        trainer = L.Trainer(
            max_epochs=int(max_epochs),
            accelerator=accelerator,
            devices=devices,
            callbacks=cbs,
            logger=False,
            enable_checkpointing=any(type(cb).__name__ == "ModelCheckpoint" for cb in callbacks),
            enable_model_summary=False,
            enable_progress_bar=progress_bar,
            num_sanity_val_steps=0,
            limit_val_batches=1.0 if n_val else 0,
            deterministic=False,
            max_time=max_time,
        )
        on_device = _place_data(data, trainer.strategy.root_device)
        pin = trainer.strategy.root_device.type == "cuda" and not on_device
        train_loader = make_loader(
            data, train_idx, min(batch_size, len(train_idx)), shuffle=True, seed=seed, pin_memory=pin
        )
        val_loader = make_loader(data, val_idx, VALIDATION_BATCH_SIZE, shuffle=False, pin_memory=pin) if n_val else None
        try:
            with _graceful_interrupt(trainer) as interrupt:
                trainer.fit(plan, train_dataloaders=train_loader, val_dataloaders=val_loader)
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

    hist = plan.history
    n_epochs = len(hist["train_loss"])
    val = hist["validation_loss"][:n_epochs] + [np.nan] * (n_epochs - len(hist["validation_loss"]))
    history = pd.DataFrame(
        {"train_loss": hist["train_loss"], "validation_loss": val}, index=pd.RangeIndex(n_epochs, name="epoch")
    )
    if interrupt["interrupted"]:
        stop_reason = "interrupted"
    elif early_stopping and stopper.stopped_epoch > 0:
        stop_reason = "early_stopping"
    elif n_epochs < max_epochs:
        stop_reason = "max_time"
    else:
        stop_reason = "max_epochs"
    if stop_reason in ("interrupted", "max_time"):
        warnings.warn(
            f"training stopped early ({stop_reason}) after {n_epochs} epochs; the results are from the best "
            "weights so far and are marked incomplete.",
            UserWarning,
            stacklevel=3,
        )
    best_epoch = int(best.best_epoch) if best is not None and best.best_epoch is not None else n_epochs - 1
    batches = getattr(train_loader.dataset, "randomness", FitOutcome.batches)
    return FitOutcome(history, n_epochs, best_epoch, stop_reason, seconds, batches)
