"""Lightning callbacks used in every fit."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lightning.pytorch.callbacks import Callback, EarlyStopping, ProgressBar

from .._progress import tqdm

if TYPE_CHECKING:
    import lightning as L


class BestWeights(Callback):
    """Keep a copy of the weights with the lowest validation loss and restore it when training ends.

    Training that ends early (early stopping, an interrupt, an error) also gets the best
    weights back. ``best_epoch`` and ``best_score`` tell which.

    Parameters
    ----------
    monitor
        The logged metric to minimise.
    on_improve
        Called with the epoch whenever the metric improves (e.g. to save a checkpoint); under
        distributed training on rank 0 only.
    restore
        Restore the best weights at the end of a fit; on an error they are always restored.
    """

    def __init__(self, monitor: str = "validation_loss", on_improve=None, restore: bool = True) -> None:
        self.monitor = monitor
        self.restore_at_end = restore
        self.best_score = math.inf
        self.best_epoch: int | None = None
        self.on_improve = on_improve
        self._state: dict | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        score = trainer.callback_metrics.get(self.monitor)
        if score is None or not math.isfinite(float(score)) or float(score) >= self.best_score:
            return
        self.best_score = float(score)
        self.best_epoch = trainer.current_epoch
        self._state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}
        if self.on_improve is not None and trainer.is_global_zero:  # one checkpoint, not one per process
            self.on_improve(trainer.current_epoch)

    def restore(self, pl_module: L.LightningModule) -> None:
        """Load the best weights seen so far into ``pl_module``."""
        if self._state is not None:
            pl_module.load_state_dict(self._state)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.restore_at_end or trainer.should_stop:
            self.restore(pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.restore(pl_module)


class EpochProgressBar(ProgressBar):
    """One progress bar over epochs, showing train and validation loss (terminal and Jupyter)."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._bar: tqdm | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._bar = tqdm(total=trainer.max_epochs, desc="Training", unit="epoch", disable=not self._enabled)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        metrics = {k: f"{float(v):.4g}" for k, v in trainer.callback_metrics.items() if k.endswith("loss")}
        self._bar.set_postfix(metrics, refresh=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class WarmEarlyStopping(EarlyStopping):
    """:class:`~lightning.pytorch.callbacks.EarlyStopping` that starts watching at ``start_epoch``.

    Used so that early stopping does not fire during KL warm-up, without the trainer's
    ``min_epochs``, which would also hold off a time limit or an interrupt.
    """

    def __init__(self, *args, start_epoch: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.start_epoch = start_epoch

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.start_epoch:
            super().on_validation_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.start_epoch:
            super().on_train_epoch_end(trainer, pl_module)
