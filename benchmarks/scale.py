"""How training cost grows with the number of cells: sclatent and scVI at 4k, 10k, 100k and 1M cells × 2,000 genes.

Cells are resampled from PBMC 3k (the 2,000 most variable genes): cells are drawn with
replacement and each one's counts are redrawn from a Poisson around its own counts, so the
data keep real genes, sparsity and library sizes. Each tool and size runs in its own
process, so that peak memory (VmHWM) belongs to that run alone.

This machine's speed swings by up to 1.5× for tens of seconds at a time, from outside the
process (one process training without pause went from 13,500 to 9,000 cells/s and back). So
below 1M cells every tool runs in ``ROUNDS`` rounds, the tools in turn and their order rotated
each round; ratios are taken within a round (runs next to each other in time) and the page
gives their median and range. At 1M cells an epoch lasts minutes, longer than the swings, and
one round is run.

"sclatent" and "scvi" use the same architecture and settings: ZINB, 1 hidden layer of 128,
10 latent dimensions, batch size 128, no validation split, no early stopping.
"sclatent-default" runs with sclatent's default batch size (256), against scVI's default (128).
"-bf16" marks sclatent runs with ``precision="bf16-mixed"`` (matrix products in bfloat16; weights,
likelihood and loss in float32), the same settings otherwise.

Memory of a default ``sl.tl.autoencode(adata, max_epochs=1)`` ("autoencode-default", at 200k
and 1M cells) is the whole process's peak (VmHWM), count matrix included: the data are
written to an h5ad first, and a fresh process reads them and trains.

Run:  python -m benchmarks --only scale  (writes docs/benchmarks/scale.md with its title and machine line;
``python -m benchmarks.scale --output FILE`` writes the tables alone)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from lightning.pytorch.callbacks import Callback

SIZES = (4_000, 10_000, 100_000, 1_000_000)
MEMORY_SIZES = (200_000, 1_000_000)
EPOCHS = {2_000: 1, 4_000: 10, 10_000: 5, 100_000: 2, 200_000: 1, 1_000_000: 1}
#: Rounds of every tool at each size (the tools in turn, order rotated each round).
ROUNDS = {4_000: 3, 10_000: 3, 100_000: 3, 1_000_000: 1}
#: The tools run at each size: the same settings as scVI everywhere, the default batch size and bfloat16 at some.
TOOLS = ("sclatent", "scvi")
MORE_TOOLS = ("sclatent-default", "sclatent-bf16", "sclatent-default-bf16")
BATCH_SIZE = 128
DEFAULT_BATCH_SIZE = 256  # sclatent's default
ARCH = {"n_hidden": 128, "n_latent": 10, "n_layers": 1, "dropout_rate": 0.1}
#: What makes sclatent's network the same as scVI's besides ARCH: scVI's encoder reads log1p of the raw counts,
#: and its latent is the posterior mean (no decoder axes to set after training).
SAME_AS_SCVI = {"likelihood": "zinb", "normalize_input": False, "rescale_latent": False}


def resample(n_cells: int, seed: int = 0, chunk: int = 100_000, obs_keys: tuple[str, ...] = ()):
    """``n_cells`` × 2,000 genes of raw counts resampled from PBMC 3k, as a float32 CSR AnnData.

    ``obs_keys``: columns of the source's ``obs`` (e.g. ``"cell_type"``) each cell takes from its source cell.
    """
    import anndata as ad
    import pandas as pd

    from benchmarks._data import load_pbmc

    base = load_pbmc()
    X = sp.csr_matrix(base.X, dtype=np.float32)
    rng = np.random.default_rng(seed)
    parts, sources = [], []
    for start in range(0, n_cells, chunk):
        sources.append(rng.integers(0, X.shape[0], min(chunk, n_cells - start)))
        rows = X[sources[-1]]
        rows.data = rng.poisson(rows.data).astype(np.float32)
        rows.eliminate_zeros()
        parts.append(rows)
    counts = sp.vstack(parts, format="csr")
    counts.indices = counts.indices.astype(np.int32)
    adata = ad.AnnData(X=counts, var=base.var[[]].copy())
    if obs_keys:  # only when asked: a million cell names are tens of MB the timed runs do not need
        source = np.concatenate(sources)
        obs = {key: base.obs[key].astype(str).to_numpy()[source] for key in obs_keys}
        adata.obs = pd.DataFrame(obs, index=adata.obs_names)
    return adata


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB since it started its program (``VmHWM``).

    Not ``ru_maxrss``: Linux keeps that across ``exec``, so a worker started by a parent that
    holds gigabytes would report the parent's size.
    """
    peak = _status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if peak is None else peak


def rss_mb() -> float:
    """This process's resident memory in MB now (``VmRSS``; NaN where /proc is missing)."""
    now = _status_mb("VmRSS")
    return float("nan") if now is None else now


class EpochTimer(Callback):
    """Wall time of each training epoch, as a Lightning callback (works for both tools)."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(time.perf_counter() - self._start)


def batch_size_of(tool: str) -> int:
    """The batch size a tool's runs use: sclatent's default for the ``-default`` runs, else 128."""
    return DEFAULT_BATCH_SIZE if "default" in tool else BATCH_SIZE


def fit_settings(epochs: int, batch_size: int, timer: EpochTimer, precision: str = "32-true") -> dict:
    """``Autoencoder.fit`` arguments of every timed sclatent run: no validation, no early stopping."""
    return {
        "max_epochs": epochs,
        "batch_size": batch_size,
        "precision": precision,
        "learning_rate": 1e-3,
        "validation_fraction": 0.0,
        "early_stopping": False,
        "progress_bar": False,
        "callbacks": [timer],
    }


def scvi_train_settings(epochs: int, batch_size: int, timer: EpochTimer) -> dict:
    """``SCVI.train`` arguments of every timed scVI run, the same as :func:`fit_settings`."""
    return {
        "max_epochs": epochs,
        "batch_size": batch_size,
        "train_size": 1.0,
        "early_stopping": False,
        "check_val_every_n_epoch": None,
        "enable_progress_bar": False,
        "plan_kwargs": {"lr": 1e-3},
        "callbacks": [timer],
    }


def loading_only(model, n_cells: int) -> float:
    """Seconds for one pass of sclatent's training data loader, with no model work."""
    from sclatent.train import make_loader

    data = model._inputs(None)
    start = time.perf_counter()
    for _ in make_loader(data, np.arange(n_cells), BATCH_SIZE, shuffle=True, seed=0):
        pass
    return time.perf_counter() - start


def profile_steps(model, n_steps: int = 300) -> list[tuple[str, float]]:
    """torch.profiler over ``n_steps`` training steps: the ops with the most self CPU time, in percent."""
    import torch

    from sclatent.train import TrainingPlan, make_loader

    data = model._inputs(None)
    loader = make_loader(data, np.arange(min(n_steps * BATCH_SIZE, len(data))), BATCH_SIZE, shuffle=True, seed=0)
    plan = TrainingPlan(model.module, learning_rate=1e-3, weight_decay=1e-6, kl_warmup_epochs=0)
    optimizer = plan.configure_optimizers()  # the optimiser training uses (fused Adam)
    model.module.train()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for batch in loader:
            loss = model.module(batch, kl_weight=1.0).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return [(e.key, 100 * e.self_cpu_time_total / total) for e in top]


def worker(tool: str, n_cells: int, epochs: int, profile: bool) -> dict:
    """Train ``tool`` on ``n_cells`` resampled cells; report times and this process's peak memory."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("scvi").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    start = time.perf_counter()
    adata = resample(n_cells)
    make_s = time.perf_counter() - start
    data_mb = (adata.X.data.nbytes + adata.X.indices.nbytes + adata.X.indptr.nbytes) / 2**20
    rss_data = peak_rss_mb()
    from benchmarks.autoencode_vs_scvi import PeakRSS

    timer = EpochTimer()
    start = time.perf_counter()
    out = {"tool": tool, "n_cells": n_cells, "n_genes": adata.n_vars, "nnz": int(adata.X.nnz)}
    if tool.startswith("sclatent"):
        import sclatent as sl

        model = sl.models.Autoencoder(adata, **SAME_AS_SCVI, **ARCH)
        out["package_precision"] = sl.models.default_precision(n_cells, "cpu")  # what precision=None trains in here
        setup_s = time.perf_counter() - start
        with PeakRSS() as mem:
            precision = "bf16-mixed" if tool.endswith("-bf16") else "32-true"
            model.fit(**fit_settings(epochs, batch_size_of(tool), timer, precision))
        out["peak_rss_mb"] = peak_rss_mb()  # before profiling
        if profile:
            out["loading_only_s"] = loading_only(model, n_cells)
            out["profile"] = profile_steps(model)
    else:
        import scvi

        scvi.settings.seed = 0
        scvi.model.SCVI.setup_anndata(adata)
        model = scvi.model.SCVI(adata, gene_likelihood="zinb", **ARCH)
        setup_s = time.perf_counter() - start
        with PeakRSS() as mem:
            model.train(**scvi_train_settings(epochs, BATCH_SIZE, timer))
        out["peak_rss_mb"] = peak_rss_mb()
    return out | {
        "epochs": epochs,
        "epoch_s": timer.times,
        "make_data_s": make_s,
        "setup_s": setup_s,
        "data_mb": data_mb,
        "rss_after_data_mb": rss_data,
        "train_start_mb": mem.base / 2**20,
        "train_peak_mb": mem.peak / 2**20,
    }


def memory_worker(path: str) -> dict:
    """A default ``sl.tl.autoencode(adata, max_epochs=1)`` on the h5ad at ``path``; this process's peak memory."""
    import logging
    import warnings

    import anndata as ad

    import sclatent as sl

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    start = time.perf_counter()
    adata = ad.read_h5ad(path)
    read_mb = peak_rss_mb()
    sl.tl.autoencode(adata, max_epochs=1, progress_bar=False)
    return {
        "precision": adata.uns["sclatent"]["training"]["precision"],
        "tool": "autoencode-default",
        "n_cells": adata.n_obs,
        "nnz": int(adata.X.nnz),
        "data_mb": (adata.X.data.nbytes + adata.X.indices.nbytes + adata.X.indptr.nbytes) / 2**20,
        "rss_after_read_mb": read_mb,
        "peak_rss_mb": peak_rss_mb(),
        "denoised_layer": "sclatent_denoised" in adata.layers,
        "seconds": time.perf_counter() - start,
    }


def run_memory(n_cells: int, tmp: Path) -> dict | None:
    """Write ``n_cells`` resampled cells to an h5ad, then train on them in a fresh process."""
    path = tmp / f"cells_{n_cells}.h5ad"
    resample(n_cells).write_h5ad(path)
    cmd = [sys.executable, "-m", "benchmarks.scale", "--memory", str(path)]
    print("running", " ".join(cmd[2:]), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    path.unlink()
    if proc.returncode != 0:
        print(proc.stderr[-3000:], flush=True)
        return None
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"    peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
    return result


def run(tool: str, n_cells: int, *, timeout: float, profile: bool = False) -> dict | None:
    """One worker in its own process; ``None`` when it did not finish within ``timeout`` seconds."""
    cmd = [sys.executable, "-m", "benchmarks.scale", "--worker", tool, str(n_cells), str(EPOCHS[n_cells])]
    if profile:
        cmd.append("--profile")
    print("running", " ".join(cmd[2:]), flush=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        print(f"    {tool} at {n_cells} cells did not finish in {timeout:.0f} s", flush=True)
        return None
    if proc.returncode != 0:
        print(proc.stderr[-3000:], flush=True)
        return None
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"    {tool}: {result['epoch_s']} s/epoch, training peak {result['train_peak_mb']:.0f} MB", flush=True)
    return result


def per_epoch(result: dict) -> float:
    """Seconds per epoch: the median epoch, the first counted only when it is the only one."""
    times = result["epoch_s"]
    return float(np.median(times[1:] if len(times) > 1 else times))


def in_turn(items: tuple, k: int) -> tuple:
    """``items`` in the order of round ``k``: rotated by ``k``, so that no item always runs first."""
    return items[k % len(items) :] + items[: k % len(items)]


def rounds_of(results: list[dict], tool: str, n_cells: int) -> dict[int, dict]:
    """The runs of ``tool`` at ``n_cells`` by round."""
    return {r.get("round", 0): r for r in results if r["tool"] == tool and r["n_cells"] == n_cells}


def median_epoch(results: list[dict], tool: str, n_cells: int) -> float:
    """Median over rounds of :func:`per_epoch`."""
    return float(np.median([per_epoch(r) for r in rounds_of(results, tool, n_cells).values()]))


def ratios(results: list[dict], tool: str, n_cells: int) -> list[float]:
    """scVI's seconds per epoch over ``tool``'s, round by round (runs of one round are next to each other in time)."""
    ours, theirs = rounds_of(results, tool, n_cells), rounds_of(results, "scvi", n_cells)
    return [per_epoch(theirs[k]) / per_epoch(ours[k]) for k in sorted(ours) if k in theirs]


def plot(results: list[dict], path: Path) -> None:
    """Seconds per epoch and peak memory against cells, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for tool, marker in (("sclatent", "o"), ("scvi", "s")):  # the same settings at every size
        n = sorted({r["n_cells"] for r in results if r["tool"] == tool})
        if not n:
            continue
        axes[0].loglog(n, [median_epoch(results, tool, m) for m in n], marker=marker, label=tool)
        peaks = [max(r["train_peak_mb"] for r in rounds_of(results, tool, m).values()) / 1024 for m in n]
        axes[1].loglog(n, peaks, marker=marker, label=tool)
    n = np.array(SIZES, dtype=float)
    if rounds_of(results, "sclatent", SIZES[0]):
        ref = median_epoch(results, "sclatent", SIZES[0])
        axes[0].loglog(n, ref * n / n[0], "k:", linewidth=1, label="linear in cells")
    axes[0].set(xlabel="cells", ylabel="seconds per epoch")
    axes[1].set(xlabel="cells", ylabel="peak RSS during training (GB)")
    for ax in axes:
        ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def report(results: list[dict], missing: list[str], figure: str, memory: list[dict] = ()) -> list[str]:
    """Markdown tables: cost per size, scVI / sclatent ratios, where time and memory go."""
    later = [r["epoch_s"][1:] for r in results if len(r["epoch_s"]) > 2]  # the first epoch warms up
    swing = max((max(t) / min(t) for t in later), default=1.0)
    rounds = {
        n: max(r.get("round", 0) for r in results if r["n_cells"] == n) + 1 for n in {r["n_cells"] for r in results}
    }
    lines = [
        "This machine's speed swings for tens of seconds at a time, from outside the process: within one run "
        f"of one tool, the slowest epoch after the first took up to {swing:.1f}× as long as the fastest. So each tool runs in rounds "
        f"({', '.join(f'{k} at {n:,} cells' for n, k in sorted(rounds.items()))}), the tools in turn, their order "
        "rotated each round, and scVI's ratios are taken within a round, between runs next to each other in time.",
        "",
        "s/epoch and cells/s are medians over the rounds; the rounds' own cells/s follow them. Memory is the "
        "largest of the rounds.",
        "",
        "| tool | cells | nnz | batch size | epochs timed per round | rounds | s/epoch | cells/s | cells/s in each round "
        "| peak RSS during training (GB) | count matrix (GB) | process peak, data preparation included (GB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sorted(rounds):
        for tool in TOOLS + MORE_TOOLS:
            by_round = rounds_of(results, tool, n)
            if not by_round:
                continue
            rs = [by_round[k] for k in sorted(by_round)]
            s = median_epoch(results, tool, n)
            each = ", ".join(f"{n / per_epoch(r):,.0f}" for r in rs)
            lines.append(
                f"| {tool} | {n:,} | {rs[0]['nnz']:,} | {batch_size_of(tool)} | {len(rs[0]['epoch_s'])} | {len(rs)} | {s:.2f} "
                f"| {n / s:,.0f} | {each} | {max(r['train_peak_mb'] for r in rs) / 1024:.2f} | {rs[0]['data_mb'] / 1024:.2f} "
                f"| {max(r['peak_rss_mb'] for r in rs) / 1024:.2f} |"
            )
    in_bf16 = sorted({r["n_cells"] for r in results if r.get("package_precision") == "bf16-mixed"})
    if in_bf16:
        lines += [
            "",
            "The rows above fix the precision. The package's default (`precision=None`) trains in bfloat16 from "
            "50,000 cells on a CPU with AVX512-BF16 or AMX, as this one has: at "
            f"{' and '.join(f'{n:,}' for n in in_bf16)} cells the default batch size and precision are the "
            "`sclatent-default-bf16` rows'.",
        ]
    if memory:
        lines += [
            "",
            "## Memory of a default `sl.tl.autoencode(adata, max_epochs=1)`",
            "",
            "A fresh process reads the h5ad and trains; its peak resident memory (VmHWM) includes Python, "
            "torch, scanpy, the count matrix, training and the results written to `adata`.",
            "",
            "| cells | count matrix (GB) | after reading (GB) | process peak (GB) | denoised layer written | precision "
            "| seconds |",
            "|---|---|---|---|---|---|---|",
            *[
                f"| {r['n_cells']:,} | {r['data_mb'] / 1024:.2f} | {r['rss_after_read_mb'] / 1024:.2f} "
                f"| {r['peak_rss_mb'] / 1024:.2f} | {'yes' if r['denoised_layer'] else 'no (above 1 GiB)'} "
                f"| {r.get('precision', '32-true')} | {r['seconds']:.0f} |"
                for r in memory
            ],
        ]
    lines += ["", *[f"- Did not finish: {m}" for m in missing], ""]
    lines += [
        "scVI's s/epoch ÷ sclatent's (= sclatent's cells/s ÷ scVI's), taken within each round:",
        "",
        "| cells | setting | median | each round |",
        "|---|---|---|---|",
    ]
    settings = (
        ("sclatent", "both at batch size 128"),
        ("sclatent-default", "each at its default batch size (256 and 128)"),
        ("sclatent-bf16", "both at batch size 128, sclatent with `precision='bf16-mixed'`"),
        (
            "sclatent-default-bf16",
            "each at its default batch size (256 and 128), sclatent with `precision='bf16-mixed'`",
        ),
    )
    for n in SIZES:
        for tool, what in settings:
            each = ratios(results, tool, n)
            if each:
                lines.append(f"| {n:,} | {what} | {np.median(each):.2f}× | {', '.join(f'{x:.2f}×' for x in each)} |")
    lines.append("")
    sizes = [n for n in SIZES if rounds_of(results, "sclatent", n)]
    ours = [min(rounds_of(results, "sclatent", n).items())[1] for n in sizes]  # each size's first round
    if len(sizes) > 1:
        medians = [median_epoch(results, "sclatent", n) for n in sizes]
        slope = np.polyfit(np.log(sizes), np.log(medians), 1)[0]
        lines += ["", f"sclatent's time per epoch grows as cells^{slope:.2f} (1.00 is linear).", ""]
    if ours:
        lines += [
            "## Where memory goes (sclatent)",
            "",
            "Resident memory sampled every 10 ms, in each size's first round. When training starts, the process holds Python, torch, scanpy "
            "and the count matrix (plus memory left over from making the data, which the allocator keeps); "
            "training adds the model, the optimiser, the library sizes and one batch at a time.",
            "",
            "| cells | count matrix (GB) | RSS when training starts (GB) | added by training (GB) | peak during training (GB) |",
            "|---|---|---|---|---|",
            *[
                f"| {r['n_cells']:,} | {r['data_mb'] / 1024:.2f} | {r['train_start_mb'] / 1024:.2f} "
                f"| {(r['train_peak_mb'] - r['train_start_mb']) / 1024:.2f} | {r['train_peak_mb'] / 1024:.2f} |"
                for r in ours
            ],
            "",
        ]
    profiled = [r for r in results if "profile" in r]
    if profiled:
        r = profiled[0]
        epoch = per_epoch(r)
        lines += [
            f"## Where time goes (sclatent, {r['n_cells']:,} cells)",
            "",
            f"One pass of the data loader alone (slicing CSR rows into dense batches of {BATCH_SIZE}, no model) takes "
            f"{r['loading_only_s']:.2f} s against {epoch:.2f} s for a training epoch: loading is "
            f"{100 * r['loading_only_s'] / epoch:.0f}% of an epoch.",
            "",
            "torch.profiler over 300 training steps (forward, backward, Adam; data loading included), ops by self CPU time. "
            "The profiler's own cost per op and the machine's swings move these shares from run to run: read them as a rough guide.",
            "",
            "| op | % of CPU time |",
            "|---|---|",
            *[f"| `{name}` | {pct:.1f} |" for name, pct in r["profile"]],
            "",
        ]
    lines += [f"![time and memory against cells]({figure})", ""]
    return lines


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=3, metavar=("TOOL", "N_CELLS", "EPOCHS"), help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory", metavar="H5AD", help=argparse.SUPPRESS)
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=list(MEMORY_SIZES))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--rounds", type=int, default=None, help="rounds at every size (default: ROUNDS)")
    parser.add_argument("--scvi-timeout", type=float, default=1200, help="seconds allowed per scVI run")
    parser.add_argument("--output", type=Path, default=None, help="markdown file; the plot goes next to it")
    args = parser.parse_args(argv)
    if args.worker:
        tool, n_cells, epochs = args.worker
        print(json.dumps(worker(tool, int(n_cells), int(epochs), args.profile)))
        return []
    if args.memory:
        print(json.dumps(memory_worker(args.memory)))
        return []
    results, missing = [], []
    for n in args.sizes:
        tools = TOOLS + (MORE_TOOLS if n in (4_000, 100_000, 1_000_000) else ())
        for k in range(ROUNDS.get(n, 1) if args.rounds is None else args.rounds):
            for tool in in_turn(tools, k):
                r = run(
                    tool,
                    n,
                    timeout=args.scvi_timeout if tool == "scvi" else 3600,
                    profile=tool == "sclatent" and n == 100_000 and k == 0,
                )
                if r is None:
                    missing.append(f"{tool} at {n:,} cells, round {k + 1}")
                else:
                    results.append(r | {"round": k})
    memory = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.memory_sizes:
            r = run_memory(n, Path(tmp))
            if r is None:
                missing.append(f"autoencode-default at {n:,} cells")
            else:
                memory.append(r)
    figure = "scale.png"
    lines = report(results, missing, figure, memory)
    print("\n".join(lines))
    if args.output:
        plot(results, args.output.parent / figure)
        args.output.with_suffix(".json").write_text(json.dumps(results, indent=1))
        args.output.write_text("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
