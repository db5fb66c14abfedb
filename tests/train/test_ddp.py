"""Distributed data parallel training: two real processes on the CPU (gloo), checked from outside.

Lightning's DDP starts rank 1 by running the script again, so the training runs in
``ddp_check.py``, in a subprocess with a timeout; this test reads what each rank wrote.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sclatent as sl
from sclatent.train import CellData
from sclatent.train._fit import _check_launcher

SCRIPT = Path(__file__).with_name("ddp_check.py")


def _script():
    spec = importlib.util.spec_from_file_location("ddp_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _launch(out: Path, *args: str, launcher: tuple[str, ...] = ()) -> None:
    """Run the script in a subprocess (no hang: the timeout; no crash: the exit status)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, *launcher, str(SCRIPT), str(out), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def _run(out: Path, *args: str, launcher: tuple[str, ...] = ()) -> list[dict]:
    _launch(out, *args, launcher=launcher)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def _check_ranks(out: Path, ranks: list[dict]) -> None:
    train = set(ranks[0]["train_indices"])
    assert ranks[0]["train_indices"] == ranks[1]["train_indices"]
    assert ranks[0]["validation_indices"] == ranks[1]["validation_indices"]
    assert [r["training_info"]["global_rank"] for r in ranks] == [0, 1]
    assert all(r["training_info"]["world_size"] == 2 for r in ranks)
    # every epoch: the ranks' cells are disjoint, each once, and together they are the training cells
    assert len(ranks[0]["cells"]) == len(ranks[1]["cells"]) == ranks[0]["training_info"]["n_epochs"]
    for a, b in zip(ranks[0]["cells"], ranks[1]["cells"], strict=True):
        assert len(a) == len(set(a))
        assert len(b) == len(set(b))
        assert not set(a) & set(b)
        assert set(a) | set(b) == train
    # early stopping stopped both ranks at the same epoch, on the same (synced) validation losses
    info = [r["training_info"] for r in ranks]
    assert info[0]["stop_reason"] == info[1]["stop_reason"] == "early_stopping"
    assert info[0]["n_epochs"] == info[1]["n_epochs"] < info[0]["max_epochs"]
    assert info[0]["best_epoch"] == info[1]["best_epoch"]
    assert ranks[0]["history"] == ranks[1]["history"]
    # both ranks end with identical weights (the best epoch's), and so the same latent
    w0, w1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    assert ranks[0]["latent_first_cells"] == ranks[1]["latent_first_cells"]


def test_two_processes_agree_and_match_one_process_step(tmp_path):
    ranks = _run(tmp_path, "deterministic")
    _check_ranks(tmp_path, ranks)
    # the first step's gradient, averaged by DDP, equals one process's step on both ranks' batches together
    script = _script()
    model = sl.models.Autoencoder(script.load(), **script.MODES["deterministic"]["model"])
    model.module.load_state_dict(torch.load(tmp_path / "init.pt"))
    first = [json.loads((tmp_path / f"rank{r}_first_batch.json").read_text()) for r in (0, 1)]
    assert len(first[0]) == len(first[1])  # equal batches: the mean of the two means is the mean over both
    cells = np.sort(np.concatenate(first))
    module = model.module.train()
    module(CellData(*model._data)[cells], kl_weight=1.0).loss.backward()
    g0, g1 = torch.load(tmp_path / "rank0_grad.pt"), torch.load(tmp_path / "rank1_grad.pt")
    expected = {k: p.grad for k, p in module.named_parameters() if p.grad is not None}
    assert g0.keys() == g1.keys() == expected.keys()
    for k, g in expected.items():
        assert torch.equal(g0[k], g1[k]), k
        # float32 rounding of sums in another order: measured at most 5.7e-6 apart on an AMD EPYC and 1.14e-5 on
        # an Intel Xeon, for gradients up to 32 (3.6e-7 of the gradient); a wrong average would be off by O(|g|)
        torch.testing.assert_close(g0[k], g, rtol=1e-6, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


def test_two_processes_from_disk_with_the_default_model(tmp_path):
    ranks = _run(tmp_path, "default", "backed")
    _check_ranks(tmp_path, ranks)
    assert "each of 2 processes takes a disjoint share" in ranks[0]["training_info"]["batches"]
    assert "chunks of" in ranks[0]["training_info"]["batches"]


@pytest.mark.slow  # the launch path only; the other two-process tests cover the training itself
def test_two_processes_started_by_torchrun(tmp_path):
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    ranks = _run(tmp_path, "default", launcher=torchrun)
    _check_ranks(tmp_path, ranks)


def test_a_diverging_loss_stops_every_rank_with_the_error(tmp_path):
    _launch(tmp_path, "diverge")
    for rank in (0, 1):
        assert "Training diverged" in (tmp_path / f"rank{rank}_error.txt").read_text()


def test_launchers_that_keep_the_model_elsewhere_are_refused(pbmc_small):
    import lightning as L

    from sclatent_test_helpers import assert_names_fix

    for strategy in ("ddp_spawn", "ddp_fork"):
        trainer = L.Trainer(accelerator="cpu", devices=2, strategy=strategy, logger=False)
        with pytest.raises(ValueError, match="would not come back") as raised:
            _check_launcher(trainer)
        assert_names_fix(raised.value)
    model = sl.models.Autoencoder(pbmc_small)
    with pytest.raises(ValueError, match="would not come back"):
        model.fit(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp_spawn", progress_bar=False)
    assert not model.is_trained


def test_more_devices_than_the_machine_has_fail_before_training(pbmc_small):
    from sclatent_test_helpers import assert_names_fix

    model = sl.models.Autoencoder(pbmc_small)
    cases = [
        ({"accelerator": "cpu", "devices": (os.cpu_count() or 1) + 1}, "asks for more than this machine has"),
        ({"accelerator": "cpu", "devices": 1, "num_nodes": 0}, "num_nodes must be"),
    ]
    if not torch.cuda.is_available():
        cases.append(({"accelerator": "gpu", "devices": 2}, "torch sees none"))
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match) as raised:
            model.fit(max_epochs=1, progress_bar=False, **kwargs)
        assert_names_fix(raised.value)
        assert not model.is_trained


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize(("n", "batch_size"), [(1351, 128), (1025, 3), (7, 3), (4099, 64)])
def test_ranks_share_every_epoch_evenly(pbmc_hvg, tmp_path, world_size, n, batch_size):
    """Every rank's loader, built as each process builds it: disjoint cells covering all, equal batch counts."""
    import anndata as ad

    from sclatent.train._data import BatchIndexSampler, DiskBatches

    if n < 2 * world_size:
        pytest.skip("fewer cells than the processes need")
    pbmc_hvg[: min(n, pbmc_hvg.n_obs)].write_h5ad(tmp_path / "d.h5ad")
    backed = ad.read_h5ad(tmp_path / "d.h5ad", backed="r")
    cells = np.arange(min(n, pbmc_hvg.n_obs))
    data = CellData(backed.X, np.ones(len(cells)), np.zeros((len(cells), 0)), np.zeros((len(cells), 0)))
    loaders = {
        "memory": [
            BatchIndexSampler(cells, batch_size, shuffle=True, seed=0, rank=r, world_size=world_size)
            for r in range(world_size)
        ],
        "disk": [
            DiskBatches(data, cells, batch_size, shuffle=True, chunk_size=64, window=4, rank=r, world_size=world_size)
            for r in range(world_size)
        ],
    }
    for where, ranks in loaders.items():
        for _ in range(2):  # two epochs
            per_rank = [
                [np.asarray(b) if where == "memory" else b["cells"].numpy() for b in loader] for loader in ranks
            ]
            counts = {len(batches) for batches in per_rank}
            assert len(counts) == 1, (where, counts)  # the same number of batches on every rank
            assert all(len(loader) == len(per_rank[0]) for loader in ranks)
            assert min(len(b) for batches in per_rank for b in batches) >= 2
            seen = np.concatenate([np.concatenate(batches) for batches in per_rank])
            np.testing.assert_array_equal(np.sort(seen), cells)  # disjoint, and every cell once
        if where == "disk" and len(cells) >= 16 * 64:
            # rank 0 draws from the whole file, not from its first 1/world_size
            first = np.concatenate([b["cells"].numpy() for b in ranks[0]])
            assert first.max() > len(cells) * (1 - 1 / world_size)
    backed.file.close()
