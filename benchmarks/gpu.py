"""GPU training: seconds per epoch on 1M resampled cells × 2,000 genes, data held on the GPU or streamed from the host.

sclatent keeps the CSR matrix on the GPU when it fits in half its free memory and builds each
batch there; otherwise batches are built on the host in pinned memory. Same network as the
scale benchmark (ZINB, 128 hidden, 10 latent), no validation, at batch sizes 128 and 1,024,
against scVI at 128. Needs a CUDA GPU; without one it says so and writes no table.

Run:  python -m benchmarks.gpu --output docs/benchmarks/gpu.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.scale import ARCH, SAME_AS_SCVI, EpochTimer, fit_settings, resample, scvi_train_settings

N_CELLS = 1_000_000
EPOCHS = 3


def fit_sclatent(adata, batch_size: int, resident: bool) -> list[float]:
    import sclatent as sl
    from sclatent.train import _fit

    # a fraction of 0 forces the host path: batches built on the CPU in pinned memory
    fraction = _fit.GPU_DATA_FRACTION
    _fit.GPU_DATA_FRACTION = fraction if resident else 0.0
    try:
        timer = EpochTimer()
        model = sl.models.Autoencoder(adata, **SAME_AS_SCVI, **ARCH)
        model.fit(**fit_settings(EPOCHS, batch_size, timer), accelerator="gpu", devices=1)
    finally:
        _fit.GPU_DATA_FRACTION = fraction
    return timer.times


def fit_scvi(adata, batch_size: int) -> list[float]:
    import scvi

    timer = EpochTimer()
    scvi.model.SCVI.setup_anndata(adata)
    model = scvi.model.SCVI(adata, gene_likelihood="zinb", **ARCH)
    model.train(**scvi_train_settings(EPOCHS, batch_size, timer), accelerator="gpu", devices=1)
    return timer.times


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--cells", type=int, default=N_CELLS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        lines = ["No CUDA GPU on this machine: nothing was timed."]
        print(lines[0])
        return lines
    adata = resample(args.cells)
    runs = [
        ("sclatent, data on the GPU", 128, lambda: fit_sclatent(adata, 128, True)),
        ("sclatent, data on the GPU", 1024, lambda: fit_sclatent(adata, 1024, True)),
        ("sclatent, pinned host batches", 1024, lambda: fit_sclatent(adata, 1024, False)),
        ("scVI", 128, lambda: fit_scvi(adata.copy(), 128)),
    ]
    lines = [
        f"{args.cells:,} cells × {adata.n_vars} genes, {EPOCHS} epochs each; the median of the epochs after the first.",
        f"GPU: {torch.cuda.get_device_name(0)}.",
        "",
        "| run | batch size | s/epoch | cells/s |",
        "|---|---|---|---|",
    ]
    for name, batch, fn in runs:
        start = time.perf_counter()
        times = fn()
        epoch = sorted(times[1:])[len(times[1:]) // 2]
        print(f"{name}, batch {batch}: {times} ({time.perf_counter() - start:.0f} s)", flush=True)
        lines.append(f"| {name} | {batch} | {epoch:.2f} | {args.cells / epoch:,.0f} |")
    print("\n".join(lines))
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")
    return lines


if __name__ == "__main__":
    main()
