"""Two-process distributed data parallel training on the CPU (gloo), as a script.

Lightning's DDP starts the other processes by running this script again, so it cannot run inside
pytest's process: ``tests/train/test_ddp.py`` runs it in a subprocess with a timeout and checks
what every rank wrote to ``OUT``.

Usage: ``python ddp_check.py OUT {default,deterministic} [backed]``

- ``default``: the default autoencoder (batch norm, variational, dropout), with early stopping.
- ``deterministic``: no sampling noise, no dropout, layer norm, so that the first step's
  gradient can be compared with a single-process step on the two ranks' batches together.
- ``diverge``: a learning rate that makes the loss NaN; each rank writes the error it got to
  ``rank{R}_error.txt``.
- ``backed``: train from an h5ad opened with ``backed="r"`` (out of core) instead of memory.

Each rank writes ``rank{R}.json`` (the cells of every batch, per epoch; the history; the
training info), ``rank{R}.pt`` (the final weights) and, with ``deterministic``, ``rank{R}_grad.pt``
(the gradient of the first step, after the ranks averaged it). Rank 0 also writes ``init.pt``,
the weights before training.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anndata as ad
import scanpy as sc
import torch
from lightning.pytorch.callbacks import Callback

import sclatent as sl

#: The settings of each mode.
MODES = {
    "default": {"model": {}, "fit": {"learning_rate": 5e-3, "kl_warmup_epochs": 5}},
    "deterministic": {
        "model": {"variational": False, "dropout_rate": 0.0, "norm": "layer"},
        "fit": {"learning_rate": 1e-2, "kl_warmup_epochs": 0},
    },
    # a learning rate that makes the loss diverge: every rank must stop with the error, none may hang
    "diverge": {"model": {}, "fit": {"learning_rate": 1e6, "kl_warmup_epochs": 0}},
}
#: Cells: 1,800 for training (900 per rank, so that both ranks' batches are the same size), 200 held out.
N_CELLS = 2000
BATCH_SIZE = 128


def load() -> ad.AnnData:
    """The first 2,000 annotated PBMC 3k cells, raw counts of 1,000 highly variable genes."""
    adata = sl.datasets.pbmc3k()
    adata = adata[adata.obs["cell_type"].notna()][:N_CELLS].copy()
    norm = adata.copy()
    sc.pp.normalize_total(norm, target_sum=1e4)
    sc.pp.log1p(norm)
    sc.pp.highly_variable_genes(norm, n_top_genes=1000, flavor="seurat")
    return adata[:, norm.var["highly_variable"].to_numpy()].copy()


class Recorder(Callback):
    """Record the cells of every training batch and the first step's (averaged) gradient."""

    def __init__(self, out: Path, grad: bool) -> None:
        self.out, self.grad = out, grad
        self.cells: list[list[int]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.cells.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.cells[-1].extend(batch["cells"].tolist())
        if trainer.global_step == 0:
            (self.out / f"rank{trainer.global_rank}_first_batch.json").write_text(json.dumps(batch["cells"].tolist()))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.grad and trainer.global_step == 0:
            grads = {k: p.grad.detach().clone() for k, p in pl_module.module.named_parameters() if p.grad is not None}
            torch.save(grads, self.out / f"rank{trainer.global_rank}_grad.pt")


def main(out: Path, mode: str, backed: bool) -> None:
    torch.set_num_threads(1)  # two processes on two cores
    adata = load()
    if backed:
        path = out / "cells.h5ad"
        if not path.exists():  # rank 0 writes it before Lightning starts rank 1
            adata.write_h5ad(path)
        adata = ad.read_h5ad(path, backed="r")
    model = sl.models.Autoencoder(adata, **MODES[mode]["model"])
    if "LOCAL_RANK" not in os.environ:  # rank 0, before Lightning starts the others
        torch.save(model.module.state_dict(), out / "init.pt")
    recorder = Recorder(out, grad=mode == "deterministic")
    if mode == "diverge":
        rank = int(os.environ.get("LOCAL_RANK", "0"))
        try:
            model.fit(
                max_epochs=20, accelerator="cpu", devices=2, strategy="ddp", progress_bar=False, **MODES[mode]["fit"]
            )
        except FloatingPointError as e:
            (out / f"rank{rank}_error.txt").write_text(str(e))
        return
    model.fit(
        max_epochs=200,
        early_stopping_patience=3,
        batch_size=BATCH_SIZE,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        progress_bar=False,
        callbacks=[recorder],
        **MODES[mode]["fit"],
    )
    rank = model.training_info["global_rank"]
    torch.save(model.module.state_dict(), out / f"rank{rank}.pt")
    record = {
        "cells": recorder.cells,
        "history": model.history.to_dict(orient="list"),
        "training_info": model.training_info,
        "train_indices": model.train_indices.tolist(),
        "validation_indices": model.validation_indices.tolist(),
        "latent_first_cells": model.get_latent()[:50].tolist(),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], len(sys.argv) > 3 and sys.argv[3] == "backed")
