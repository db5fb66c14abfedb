"""The thin :class:`lightning.LightningModule` that trains an :class:`~sclatent.module.AutoencoderModule`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning as L
import torch

if TYPE_CHECKING:
    from ..module import AutoencoderModule


class TrainingPlan(L.LightningModule):
    """Optimise a module's loss with Adam, warming up the KL weight linearly.

    The per-epoch negative ELBO (reconstruction + KL at full weight, per cell) on the training
    and validation cells is kept in ``history`` and logged as ``train_loss`` and
    ``validation_loss`` (the latter is what early stopping monitors). Under distributed training
    both are summed over the cells of every process, so every rank holds the same history and
    early stopping decides the same on every rank.

    A loss that is not finite raises :class:`FloatingPointError`: on the CPU at once, before the
    optimiser step; on a GPU at the end of the epoch, so that no step waits for the device, and
    under distributed training at the end of the epoch on every rank together. In those two cases
    the weights from the start of the diverging epoch are put back before the error; the best
    weights so far, where there are any, are then restored by :class:`~sclatent.train.BestWeights`.

    Parameters
    ----------
    module
        The model.
    learning_rate
        Adam's learning rate.
    weight_decay
        Adam's weight decay.
    kl_warmup_epochs
        Epochs over which the KL weight rises from 0 to ``kl_weight``.
    kl_weight
        The weight of the KL term after warm-up (1: the evidence lower bound). The validation
        loss is always the evidence lower bound, whatever the weight.
    """

    def __init__(
        self,
        module: AutoencoderModule,
        *,
        learning_rate: float,
        weight_decay: float,
        kl_warmup_epochs: int,
        kl_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.module = module
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.kl_warmup_epochs = kl_warmup_epochs
        self.max_kl_weight = kl_weight
        self.history: dict[str, list[float]] = {"train_loss": [], "validation_loss": []}
        self._sums = {"train": [0.0, 0], "validation": [0.0, 0]}
        self._nonfinite = torch.zeros((), dtype=torch.int32)
        self._epoch_start: dict[str, torch.Tensor] | None = None

    @property
    def kl_weight(self) -> float:
        """The weight of the KL term in the current epoch."""
        if self.kl_warmup_epochs <= 0:
            return self.max_kl_weight
        return self.max_kl_weight * min(1.0, self.current_epoch / self.kl_warmup_epochs)

    def _accumulate(self, split: str, out, n: int) -> None:
        acc = self._sums[split]
        acc[0] += (out.reconstruction + out.kl).detach().sum()
        acc[1] += n

    def _epoch_mean(self, split: str) -> float:
        """Return the epoch's mean loss per cell, over the cells of every process under distributed training."""
        total, n = self._sums[split]
        self._sums[split] = [0.0, 0]
        if self.trainer.world_size > 1:  # every rank calls this at the same point of the epoch
            sums = torch.tensor([float(total), float(n)], dtype=torch.float64, device=self.device)
            total, n = self.trainer.strategy.reduce(sums, reduce_op="sum").tolist()
        return float(total) / max(n, 1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.module(batch, kl_weight=self.kl_weight)
        if self._checks_each_step():
            if not torch.isfinite(out.loss):
                # stop before the optimiser step, so the weights stay finite
                msg = (
                    f"the training loss became {out.loss.item()} at epoch {self.current_epoch}, batch {batch_idx}; "
                    f"lower the learning_rate (e.g. {self.learning_rate / 10:g}) or check the data for extreme values"
                )
                raise FloatingPointError(msg)
        else:
            # on a GPU a per-step check would wait for the device every step, and under distributed training
            # an error on one rank alone would leave the others waiting: count, and check once per epoch
            self._nonfinite = self._nonfinite + (~torch.isfinite(out.loss.detach())).int()
        self._accumulate("train", out, batch["x"].shape[0])
        return out.loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self.module(batch, kl_weight=1.0)
        self._accumulate("validation", out, batch["x"].shape[0])

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._epoch_mean("validation")
            return
        value = self._epoch_mean("validation")
        self.history["validation_loss"].append(value)
        self.log("validation_loss", value, prog_bar=True)

    def _checks_each_step(self) -> bool:
        """Whether each step's loss is checked at once (one CPU process) rather than once per epoch."""
        return self.device.type == "cpu" and self.trainer.world_size == 1

    def on_train_epoch_start(self) -> None:
        self._nonfinite = torch.zeros((), dtype=torch.int32, device=self.device)
        # checked once per epoch, a diverged epoch has already stepped: keep a copy to return to (on the device, no sync)
        self._epoch_start = (
            None if self._checks_each_step() else {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        )

    def on_train_epoch_end(self) -> None:
        if self.trainer.world_size > 1:  # every rank learns of every rank's count, so all of them raise together
            self._nonfinite = self.trainer.strategy.reduce(self._nonfinite, reduce_op="sum")
        if int(self._nonfinite):
            if self._epoch_start is not None:  # the weights before the diverging epoch, which were finite
                self.module.load_state_dict(self._epoch_start)
            msg = (
                f"the training loss became NaN or infinite in {int(self._nonfinite)} steps of epoch {self.current_epoch}; "
                f"lower the learning_rate (e.g. {self.learning_rate / 10:g}) or check the data for extreme values"
            )
            raise FloatingPointError(msg)
        value = self._epoch_mean("train")
        self.history["train_loss"].append(value)
        self.log("train_loss", value, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # the fused kernel updates all parameters in one pass (CPU and CUDA); frozen ones (a
        # classifier's encoder) are left out, so that no optimiser state or decay can touch them
        fused = self.device.type in ("cpu", "cuda")
        trainable = [p for p in self.module.parameters() if p.requires_grad]
        return torch.optim.Adam(trainable, lr=self.learning_rate, weight_decay=self.weight_decay, eps=0.01, fused=fused)
