"""bfloat16 against float32 matrix products at 100,000 cells: held-out loss, clusters and time.

The evidence for ``precision=None`` choosing ``"bf16-mixed"`` from 50,000 cells on CPUs with
AVX512-BF16 or AMX (:func:`sclatent.models.default_precision`). 100,000 cells × 2,000 genes are
resampled from PBMC 3k as in the scale benchmark, each keeping its source cell's type. A default
``Autoencoder`` (default epochs, batch size, early stopping and validation split) is trained with
each precision and seeds 0-2, the two precisions in turn and their order rotated each seed,
because this machine's speed swings from outside the process.

Scores: the held-out loss (the negative ELBO per validation cell, the lowest over the epochs;
lower is better), and Leiden clusters of the latent against the cell types on the same 20,000
cells: the resolution (of four) with the best NMI, its NMI and ARI.

Run:  python -m benchmarks --only precision  (``python -m benchmarks.precision --output FILE`` writes the tables alone)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_CELLS = 100_000
SEEDS = (0, 1, 2)
PRECISIONS = ("32-true", "bf16-mixed")
SCORED_CELLS = 20_000
RESOLUTIONS = (0.2, 0.4, 0.7, 1.0)


def leiden_scores(latent: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """NMI and ARI against ``labels`` of the Leiden clustering (of :data:`RESOLUTIONS`) with the best NMI."""
    import anndata as ad
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    cells = ad.AnnData(obs=pd.DataFrame({"label": labels}, index=[str(i) for i in range(len(labels))]))
    cells.obsm["latent"] = latent
    sc.pp.neighbors(cells, use_rep="latent")
    best = (0.0, 0.0)
    for resolution in RESOLUTIONS:
        sc.tl.leiden(cells, resolution=resolution, flavor="igraph", n_iterations=2, key_added="leiden")
        clusters = cells.obs["leiden"]
        best = max(best, (normalized_mutual_info_score(labels, clusters), adjusted_rand_score(labels, clusters)))
    return best


def run_one(adata, precision: str, seed: int, scored: np.ndarray) -> dict:
    """Train a default model in ``precision``; its time, held-out loss and cluster scores."""
    import sclatent as sl

    model = sl.models.Autoencoder(adata, random_state=seed)
    start = time.perf_counter()
    model.fit(precision=precision, progress_bar=False)
    seconds = time.perf_counter() - start
    info = model.training_info
    nmi, ari = leiden_scores(model.get_latent()[scored], adata.obs["cell_type"].to_numpy()[scored])
    return {
        "precision": precision,
        "seed": seed,
        "epochs": info["n_epochs"],
        "fit_s": seconds,
        "cells_per_s": info["n_train_cells"] * info["n_epochs"] / seconds,
        "held_out_loss": float(model.history["validation_loss"].min()),
        "nmi": nmi,
        "ari": ari,
    }


def report(runs: pd.DataFrame, machine_has_bf16: bool) -> list[str]:
    """Markdown: every run, then float32 minus bfloat16 per seed."""
    lines = [
        f"{N_CELLS:,} cells × 2,000 genes resampled from PBMC 3k, default model and training; "
        f"this CPU {'has' if machine_has_bf16 else 'lacks'} native bfloat16 (AVX512-BF16 or AMX). "
        "Fit time includes validation; cells/s counts training cells only.",
        "",
        "| precision | seed | epochs | fit (s) | cells/s | held-out loss | Leiden NMI | Leiden ARI |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {r.precision} | {r.seed} | {r.epochs} | {r.fit_s:.0f} | {r.cells_per_s:,.0f} | {r.held_out_loss:.2f} "
            f"| {r.nmi:.3f} | {r.ari:.3f} |"
            for r in runs.sort_values(["seed", "precision"]).itertuples()
        ],
        "",
        "Per seed, bfloat16 against float32 (loss: bfloat16 minus float32, negative is better; time: float32's ÷ bfloat16's):",
        "",
        "| seed | held-out loss | Leiden NMI | Leiden ARI | fit time ratio |",
        "|---|---|---|---|---|",
    ]
    by = runs.set_index(["precision", "seed"])
    for seed in sorted(runs["seed"].unique()):
        full, half = by.loc[("32-true", seed)], by.loc[("bf16-mixed", seed)]
        lines.append(
            f"| {seed} | {half.held_out_loss - full.held_out_loss:+.2f} | {half.nmi - full.nmi:+.3f} "
            f"| {half.ari - full.ari:+.3f} | {full.fit_s / half.fit_s:.2f}× |"
        )
    med = runs.groupby("precision")[["held_out_loss", "nmi", "ari", "cells_per_s"]].median()
    lines += [
        "",
        "Medians over the seeds: held-out loss "
        f"{med.loc['bf16-mixed', 'held_out_loss']:.2f} (bfloat16) against {med.loc['32-true', 'held_out_loss']:.2f} (float32), "
        f"NMI {med.loc['bf16-mixed', 'nmi']:.3f} against {med.loc['32-true', 'nmi']:.3f}, "
        f"{med.loc['bf16-mixed', 'cells_per_s']:,.0f} against {med.loc['32-true', 'cells_per_s']:,.0f} cells/s.",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--output", type=Path, default=None, help="markdown file; the runs go next to it as CSV")
    args = parser.parse_args(argv)

    import sclatent as sl
    from benchmarks._data import quiet
    from benchmarks.scale import in_turn, resample

    quiet()
    adata = resample(N_CELLS, obs_keys=("cell_type",))
    scored = np.random.default_rng(1).choice(N_CELLS, min(N_CELLS, SCORED_CELLS), replace=False)
    runs = []
    for k, seed in enumerate(args.seeds):
        for precision in in_turn(PRECISIONS, k):
            runs.append(run_one(adata, precision, seed, scored))
            print(runs[-1], flush=True)
    runs = pd.DataFrame(runs)
    lines = report(runs, sl.train.cpu_has_fast_bf16())
    print("\n".join(lines))
    if args.output:
        runs.to_csv(args.output.with_suffix(".csv"), index=False)
        args.output.write_text("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
