"""Training from disk against training in memory: 200k and 2M cells × 2,000 genes, one epoch each.

The cells are resampled from PBMC 3k as in the scale benchmark (drawn with replacement, each
one's counts redrawn from a Poisson around its own) and written to an h5ad chunk by chunk, so
that the file is never held in memory here. Each run is a fresh process that opens the file,
either with ``backed="r"`` (from disk, out of core) or read whole (in memory), and runs a default
``sl.tl.autoencode(adata, max_epochs=1)`` (10% of the cells held out for validation, the
denoised layer left out by the size rule). Peak memory is the process's ``VmHWM``: the
libraries, the data and the training together.

This machine's speed swings for tens of seconds at a time (see the scale benchmark), so at sizes
whose epoch is short both ways run in ``ROUNDS`` rounds, in turn and in alternating order, and
the throughput ratio is taken within each round.

Run:  python -m benchmarks --only disk
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from lightning.pytorch.callbacks import Callback

from benchmarks.scale import EpochTimer, in_turn, peak_rss_mb, rss_mb

SIZES = (200_000, 2_000_000)
#: Rounds of the two ways at each size (an epoch of 2M cells lasts minutes, longer than the machine's swings).
ROUNDS = {200_000: 3, 2_000_000: 1}


def write_resampled(path: Path, n_cells: int, seed: int = 0, chunk: int = 100_000) -> None:
    """Write ``n_cells`` × 2,000 genes resampled from PBMC 3k to an h5ad, one chunk of cells at a time."""
    import anndata as ad
    import h5py

    from benchmarks._data import load_pbmc

    base = load_pbmc()
    X = sp.csr_matrix(base.X, dtype=np.float32)
    rng = np.random.default_rng(seed)

    def cells(n: int) -> sp.csr_matrix:
        rows = X[rng.integers(0, X.shape[0], n)]
        rows.data = rng.poisson(rows.data).astype(np.float32)
        rows.eliminate_zeros()
        return rows

    first = min(chunk, n_cells)
    ad.AnnData(X=cells(first), var=base.var[[]].copy()).write_h5ad(path)
    with h5py.File(path, "a") as f:
        matrix = ad.io.sparse_dataset(f["X"])
        for start in range(first, n_cells, chunk):
            matrix.append(cells(min(chunk, n_cells - start)))
        del f["obs"]
        ad.io.write_elem(f, "obs", pd.DataFrame(index=pd.RangeIndex(n_cells).astype(str)))


class TrainingPeak(Callback):
    """The process's peak RSS when training ends (before the latent is computed and written)."""

    peak_mb = float("nan")

    def on_train_end(self, trainer, pl_module):
        self.peak_mb = peak_rss_mb()


def worker(path: str, where: str) -> dict:
    """One default ``sl.tl.autoencode(adata, max_epochs=1)`` on the h5ad at ``path``, from disk or in memory."""
    import logging
    import warnings

    import anndata as ad

    import sclatent as sl

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    start = time.perf_counter()
    adata = ad.read_h5ad(path, backed="r" if where == "disk" else None)
    opened_mb, held_mb = peak_rss_mb(), rss_mb()
    timer, training = EpochTimer(), TrainingPeak()
    sl.tl.autoencode(adata, max_epochs=1, progress_bar=False, callbacks=[timer, training])
    info = adata.uns["sclatent"]["training"]
    return {
        "where": where,
        "n_cells": adata.n_obs,
        "n_train_cells": info["n_train_cells"],
        "epoch_s": timer.times[0],
        "cells_per_s": info["n_train_cells"] / timer.times[0],
        "rss_after_open_mb": opened_mb,
        "rss_held_after_open_mb": held_mb,
        "outputs_mb": sum(v.nbytes for v in adata.obsm.values()) / 2**20,
        "training_peak_rss_mb": training.peak_mb,
        "peak_rss_mb": peak_rss_mb(),
        "seconds": time.perf_counter() - start,
        "batches": info["batches"],
        "file_mb": Path(path).stat().st_size / 2**20,
    }


def run(path: Path, where: str) -> dict | None:
    cmd = [sys.executable, "-m", "benchmarks.disk", "--worker", str(path), where]
    print("running", where, path.name, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], flush=True)
        return None
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"    {result['cells_per_s']:,.0f} cells/s, peak RSS {result['peak_rss_mb']:,.0f} MB", flush=True)
    return result


def report(results: list[dict], missing: list[str]) -> list[str]:
    df = pd.DataFrame(results)
    lines = [
        "Cells resampled from PBMC 3k (2,000 genes, about 140 stored counts a cell), written to an h5ad chunk "
        "by chunk. Each row is a fresh process running a default `sl.tl.autoencode(adata, max_epochs=1)` on "
        'the file opened with `backed="r"` (*disk*) or read whole (*memory*). *cells/s* is the training '
        "epoch's: the 90% of cells it trains on, over the epoch's time with the validation pass of the other 10%. "
        "RSS is the whole process's peak (`VmHWM`: libraries, data, training): after opening the file, "
        "when training ends, and at the end (the latent written back, 20 floats a cell). *held after opening* is "
        "the resident memory (`VmRSS`) once the file is open, before sclatent runs: the libraries and what the "
        "opened AnnData keeps in memory (from disk: `obs` with the cell names, `var`; in memory: the counts too).",
        "",
        "| cells | round | where | file MB | cells/s | epoch s | held after opening MB | RSS after opening MB "
        "| RSS when training ends MB | peak RSS MB | latent written MB | total s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['n_cells']:,} | {r.get('round', 0) + 1} | {r['where']} | {r['file_mb']:,.0f} | {r['cells_per_s']:,.0f} | {r['epoch_s']:.1f} | "
            f"{r.get('rss_held_after_open_mb', float('nan')):,.0f} | {r['rss_after_open_mb']:,.0f} | "
            f"{r['training_peak_rss_mb']:,.0f} | {r['peak_rss_mb']:,.0f} | {r.get('outputs_mb', float('nan')):,.0f} | "
            f"{r['seconds']:.0f} |"
        )
    lines.append("")
    if len(df) and "round" not in df:
        df["round"] = 0
    if len(df):
        for n, runs in df.groupby("n_cells"):
            pairs = runs.pivot(index="round", columns="where", values="cells_per_s").dropna()
            if {"disk", "memory"} <= set(pairs.columns) and len(pairs):
                each = pairs["disk"] / pairs["memory"]
                rounds = (
                    f"median of {len(each)} rounds: {', '.join(f'{x:.0%}' for x in each)}"
                    if len(each) > 1
                    else "one round"
                )
                lines.append(f"- {n:,} cells: from disk at {each.median():.0%} of the in-memory throughput ({rounds}).")
    # memory figures: the median over rounds (they barely vary); the batches' description: the first run's
    disk = df[df["where"] == "disk"].groupby("n_cells").median(numeric_only=True) if len(df) else df
    if len(disk):
        disk["batches"] = df[df["where"] == "disk"].groupby("n_cells")["batches"].first()
    if len(disk) >= 2:
        small, large = disk.index.min(), disk.index.max()
        grow = disk.loc[large, "peak_rss_mb"] - disk.loc[small, "peak_rss_mb"]
        grow_training = disk.loc[large, "training_peak_rss_mb"] - disk.loc[small, "training_peak_rss_mb"]
        lines.append(
            f"- Peak RSS from disk: {disk.loc[large, 'peak_rss_mb']:,.0f} MB at {large:,} cells, "
            f"{grow:+,.0f} MB against {small:,} cells ({grow_training:+,.0f} MB when training ends)."
        )
        if "rss_held_after_open_mb" in disk:
            held = disk["rss_held_after_open_mb"]
            by_training = disk["training_peak_rss_mb"] - held
            by_call = disk["peak_rss_mb"] - held - disk["outputs_mb"]
            lines.append(
                f"- Of that growth, the opened AnnData holds {held[large] - held[small]:+,.0f} MB more (its `obs`: "
                f"cell names are Python strings), before sclatent runs. What sclatent adds on top of the opened file "
                f"changes by {by_training[large] - by_training[small]:+,.0f} MB up to the end of training, and by "
                f"{by_call[large] - by_call[small]:+,.0f} MB over the whole call less the latent it writes "
                f"({disk['outputs_mb'][large]:,.0f} MB at {large:,} cells)."
            )
    if len(disk):
        lines.append(f"- Batches from disk: {disk['batches'].iloc[0]}.")
    if missing:
        lines += ["", "Did not finish: " + ", ".join(missing) + "."]
    return lines


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("H5AD", "WHERE"), help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=None, help="rounds at every size (default: ROUNDS)")
    parser.add_argument("--report-only", action="store_true", help="write the page from the .json, train nothing")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return []
    if args.report_only:
        lines = report(json.loads(args.output.with_suffix(".json").read_text()), [])
        args.output.write_text("\n".join(lines))
        return lines
    results, missing = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"cells_{n}.h5ad"
            write_resampled(path, n)
            for k in range(ROUNDS.get(n, 1) if args.rounds is None else args.rounds):
                for where in in_turn(("disk", "memory"), k):
                    r = run(path, where)
                    if r is None:
                        missing.append(f"{where} at {n:,} cells, round {k + 1}")
                    else:
                        results.append(r | {"round": k})
            path.unlink()
    lines = report(results, missing)
    print("\n".join(lines))
    if args.output:
        args.output.with_suffix(".json").write_text(json.dumps(results, indent=1))
        args.output.write_text("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
