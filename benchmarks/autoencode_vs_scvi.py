"""sclatent against scvi-tools' SCVI, in the same process, on PBMC 3k (2,000 highly variable genes).

1. Same architecture, likelihood (ZINB), batch size (128), learning rate, KL warm-up, validation
   split and number of epochs: seconds per epoch, repeated with the order alternating.
2. Each with its defaults: total fit time, peak memory, and Leiden NMI/ARI on each latent.

Run:  python -m benchmarks --only speed  (writes docs/benchmarks/speed.md with its title and machine line;
``python -m benchmarks.autoencode_vs_scvi --output FILE`` writes the tables alone)
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import scanpy as sc
import scvi
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

import sclatent as sl
from benchmarks._data import load_pbmc
from benchmarks.scale import ARCH, SAME_AS_SCVI

RESOLUTIONS = (0.25, 0.5, 0.75, 1.0, 1.5)


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 10 ms."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.base) / 2**20

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _poll(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._rss())


def leiden_scores(adata: sc.AnnData, rep: str) -> dict[float, tuple[float, float]]:
    a = adata.copy()
    sc.pp.neighbors(a, use_rep=rep, n_neighbors=15, random_state=0)
    out = {}
    for r in RESOLUTIONS:
        sc.tl.leiden(a, resolution=r, flavor="igraph", n_iterations=2, random_state=0)
        out[r] = (
            normalized_mutual_info_score(a.obs["cell_type"], a.obs["leiden"]),
            adjusted_rand_score(a.obs["cell_type"], a.obs["leiden"]),
        )
    return out


def fit_sclatent_same(adata, epochs: int, validate: bool) -> float:
    model = sl.models.Autoencoder(adata, **SAME_AS_SCVI, **ARCH)
    start = time.perf_counter()
    model.fit(
        max_epochs=epochs,
        batch_size=128,
        learning_rate=1e-3,
        kl_warmup_epochs=400,
        validation_fraction=0.1 if validate else 0.0,
        early_stopping=False,
        progress_bar=False,
    )
    return (time.perf_counter() - start) / epochs


def fit_scvi_same(adata, epochs: int, validate: bool) -> float:
    scvi.model.SCVI.setup_anndata(adata)
    model = scvi.model.SCVI(adata, n_hidden=128, n_latent=10, n_layers=1, dropout_rate=0.1, gene_likelihood="zinb")
    start = time.perf_counter()
    model.train(
        max_epochs=epochs,
        batch_size=128,
        train_size=0.9 if validate else 1.0,
        early_stopping=False,
        check_val_every_n_epoch=1 if validate else None,
        enable_progress_bar=False,
        plan_kwargs={"lr": 1e-3, "n_epochs_kl_warmup": 400},
    )
    return (time.perf_counter() - start) / epochs


def import_seconds(module: str) -> float:
    """Seconds that ``import module`` takes in a fresh Python process."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def machine() -> str:
    """The machine and versions line every benchmark page starts with."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"Machine: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, scvi-tools {scvi.__version__}, "
        f"sclatent {sl.__version__}, scanpy {sc.__version__}."
    )


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="markdown file to write the tables to")
    parser.add_argument("--epochs", type=int, default=40, help="epochs per same-architecture run")
    parser.add_argument("--repeats", type=int, default=3, help="same-architecture repeats (order alternates)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("scvi").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    sc.settings.verbosity = 0
    scvi.settings.seed = 0

    adata = load_pbmc()
    lines = []

    # 1. same architecture, with and without a validation pass every epoch
    lines += [
        "## 1. Same architecture, likelihood, batch size and epochs",
        "",
        f"ZINB, 1 hidden layer of 128, 10 latent dimensions, dropout 0.1, batch size 128, Adam lr 1e-3, "
        f"KL warm-up over 400 epochs, {args.epochs} epochs, {adata.n_obs} cells × {adata.n_vars} genes. "
        f"{args.repeats} repeats per setting, order alternating, after an untimed warm-up fit of each. (a) both hold out 10% of cells and "
        "score them after every epoch; (b) neither validates (sclatent `validation_fraction=0`, "
        "scVI `train_size=1.0`), so both train on all cells.",
        "",
        "| setting | repeat | sclatent s/epoch | scVI s/epoch | scVI / sclatent |",
        "|---|---|---|---|---|",
    ]
    # untimed warm-up of both, so one-time start-up costs of the process do not count
    fit_sclatent_same(adata.copy(), 2, True)
    fit_scvi_same(adata.copy(), 2, True)
    for label, validate in (("(a) validation every epoch", True), ("(b) no validation", False)):
        ours, theirs = [], []
        for rep in range(args.repeats):
            order = [("sclatent", fit_sclatent_same), ("scvi", fit_scvi_same)]
            for name, fn in order if rep % 2 == 0 else order[::-1]:
                t = fn(adata.copy(), args.epochs, validate)
                (ours if name == "sclatent" else theirs).append(t)
                print(f"same architecture {label}, repeat {rep}: {name} {t:.3f} s/epoch", flush=True)
        ratios = [b / a for a, b in zip(ours, theirs, strict=True)]
        lines += [
            *[
                f"| {label} | {i} | {a:.3f} | {b:.3f} | {r:.2f}× |"
                for i, (a, b, r) in enumerate(zip(ours, theirs, ratios, strict=True))
            ],
            f"| {label} | **median** | **{statistics.median(ours):.3f}** | **{statistics.median(theirs):.3f}** "
            f"| **{statistics.median(ratios):.2f}×** |",
        ]
    lines.append("")

    # 2. defaults
    a_ours = adata.copy()
    with PeakRSS() as mem_ours:
        start = time.perf_counter()
        sl.tl.autoencode(a_ours, progress_bar=False, denoise=False)
        t_ours = time.perf_counter() - start
    epochs_ours = a_ours.uns["sclatent"]["training"]["n_epochs"]
    print(f"defaults: sclatent {t_ours:.1f} s, {epochs_ours} epochs", flush=True)

    a_scvi = adata.copy()
    scvi.model.SCVI.setup_anndata(a_scvi)
    model = scvi.model.SCVI(a_scvi)
    with PeakRSS() as mem_scvi:
        start = time.perf_counter()
        model.train(enable_progress_bar=False)
        t_scvi = time.perf_counter() - start
    epochs_scvi = len(model.history["elbo_train"])
    a_scvi.obsm["X_scVI"] = model.get_latent_representation()
    print(f"defaults: scVI {t_scvi:.1f} s, {epochs_scvi} epochs", flush=True)

    s_ours = leiden_scores(a_ours, "X_sclatent")
    s_scvi = leiden_scores(a_scvi, "X_scVI")
    best_ours = max(v[0] for v in s_ours.values())
    best_scvi = max(v[0] for v in s_scvi.values())
    lines += [
        "## 2. Each with its defaults",
        "",
        "sclatent: `sl.tl.autoencode(adata)` (ZINB VAE, batch 256, early stopping on 10% held-out cells). "
        "scVI: `SCVI(adata).train()` (ZINB VAE, batch 128, epochs from the number of cells). "
        "Leiden (igraph, 15 neighbours) on each latent against the published cell types.",
        "",
        "| | sclatent | scVI | scVI / sclatent |",
        "|---|---|---|---|",
        f"| fit time (s) | {t_ours:.1f} | {t_scvi:.1f} | {t_scvi / t_ours:.1f}× |",
        f"| epochs | {epochs_ours} | {epochs_scvi} | |",
        f"| s/epoch | {t_ours / epochs_ours:.3f} | {t_scvi / epochs_scvi:.3f} | {(t_scvi / epochs_scvi) / (t_ours / epochs_ours):.2f}× |",
        f"| peak RSS during fit (MB above start) | {mem_ours.delta_mb:.0f} | {mem_scvi.delta_mb:.0f} | |",
        *[
            f"| Leiden NMI / ARI, resolution {r} | {s_ours[r][0]:.3f} / {s_ours[r][1]:.3f} | {s_scvi[r][0]:.3f} / {s_scvi[r][1]:.3f} | |"
            for r in RESOLUTIONS
        ],
        f"| best NMI over resolutions | {best_ours:.3f} | {best_scvi:.3f} | |",
        "",
        "Peak RSS is measured above the process's resident memory when each fit starts; memory freed by earlier runs in the same process is reused, so it understates the later run (scVI). Compare memory in separate processes.",
        "",
    ]
    # 3. import time, each in fresh processes, alternating
    times = {"scanpy": [], "sclatent": []}
    for _ in range(5):
        for module in times:
            times[module].append(import_seconds(module))
    extra = [b - a for a, b in zip(times["scanpy"], times["sclatent"], strict=True)]
    lines += [
        "## 3. Import time",
        "",
        "`import scanpy` and `import sclatent`, each in a fresh process, 5 times, alternating. sclatent imports "
        "torch, Lightning and scvi-tools only when a model is first used (e.g. the first `sl.tl.autoencode`).",
        "",
        "| | median (s) | runs (s) |",
        "|---|---|---|",
        *[
            f"| `import {m}` | {statistics.median(t):.2f} | {', '.join(f'{x:.2f}' for x in t)} |"
            for m, t in times.items()
        ],
        f"| sclatent minus scanpy, pair by pair | {statistics.median(extra):.2f} | {', '.join(f'{x:.2f}' for x in extra)} |",
        "",
    ]
    header = [
        "Both tools run in the same process, one after the other, so machine noise largely cancels in the ratios. "
        f"Data: PBMC 3k, {adata.n_obs} annotated cells, {adata.n_vars} highly variable genes (raw counts).",
        "",
    ]
    lines = header + lines
    print("\n".join(lines))
    if args.output:
        args.output.write_text("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
