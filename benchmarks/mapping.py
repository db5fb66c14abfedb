"""Mapping a query onto a trained reference: sclatent's ``map_query`` against scvi-tools' ``SCVI.load_query_data``.

For each data set a reference is trained on some batches and the other batches are mapped onto
it, by both tools with the same data, the same epochs and the same seed. Measured on the query:

- time to map (the query training and its latent; the reference's training is not counted);
- label-transfer accuracy: `sl.tl.transfer_labels` (15 weighted neighbours, every
  cell labelled) from the reference's latent to the query's, the same function for both tools;
- mixing: among each query cell's 15 nearest neighbours in the joint latent, the fraction from
  the reference, over what random mixing gives (1 = as mixed as random, 0 = apart);
- the same mixing for the query encoded without surgery (called a reference batch; both tools), and with
  sclatent's default `norm="batch"` instead of the `norm="layer"` that mapping needs.

Run:  python -m benchmarks --only mapping
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

import sclatent as sl
from benchmarks.quality import load

if TYPE_CHECKING:
    import anndata as ad

#: sclatent's reference settings for mapping: layer norm (the query is normalised by itself, not
#: by the reference's batch statistics) and a 10-dimensional latent, as scvi-tools' default.
REFERENCE = {"norm": "layer", "n_latent": 10}
#: Epochs for the reference and for the query, the same for both tools.
REFERENCE_EPOCHS, QUERY_EPOCHS = 200, 200

#: (data set, batch column, reference batches, categorical covariates, label column)
CASES = [
    ("CellBench 3 lines × 2 technologies", "batch", ["CEL-seq2"], [], "cell_line_demuxlet"),
    ("CellBench 5 lines × 3 plates", "batch", ["p1", "p2"], [], "cell_line_demuxlet"),
    ("Kang 2018 stimulated PBMCs", "patient_id", ["101"], ["group_id"], "cluster_id"),
]


def query_mixing(reference: np.ndarray, query: np.ndarray, k: int = 15) -> float:
    """Fraction of the query's k nearest neighbours (joint latent) that are reference cells, over random mixing."""
    joint = np.vstack([reference, query])
    from_reference = np.r_[np.ones(len(reference)), np.zeros(len(query))]
    idx = NearestNeighbors(n_neighbors=k + 1).fit(joint).kneighbors(query, return_distance=False)[:, 1:]
    return float(from_reference[idx].mean() / (len(reference) / (len(joint) - 1)))


def accuracy(query, reference, label: str, latent_key: str) -> float:
    """kNN label transfer from the reference to the query, every cell labelled."""
    q = query.copy()
    sl.tl.transfer_labels(q, reference, label, use_rep=latent_key, uncertainty_threshold=1.0, key_added="_pred")
    return float((q.obs["_pred"].astype(str) == q.obs[label].astype(str)).mean())


def as_reference_batch(query: ad.AnnData, batch_key: str, reference_batches) -> ad.AnnData:
    """A copy of the query with every cell in the first (sorted) reference batch: no surgery."""
    unmapped = query.copy()
    unmapped.obs[batch_key] = sorted(map(str, reference_batches))[0]
    return unmapped


def split(name: str, batch_key: str, ref_batches: list[str]):
    adata = load(name)
    adata.obs[batch_key] = adata.obs[batch_key].astype(str)
    is_ref = adata.obs[batch_key].isin(ref_batches).to_numpy()
    return adata[is_ref].copy(), adata[~is_ref].copy()


def run_sclatent(reference, query, batch_key, covariates, label, seed, **settings) -> dict:
    ref = reference.copy()
    model = sl.tl.autoencode(
        ref,
        batch_key=batch_key,
        categorical_covariate_keys=covariates or None,
        max_epochs=REFERENCE_EPOCHS,
        early_stopping=False,
        random_state=seed,
        progress_bar=False,
        denoise=False,
        return_model=True,
        **settings,
    )
    without = model.get_latent(as_reference_batch(query, batch_key, model.setup.categories[batch_key]))
    q = query.copy()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the norm='batch' advice
        sl.tl.map_query(q, model, max_epochs=QUERY_EPOCHS, early_stopping=False, progress_bar=False)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "accuracy": accuracy(q, ref, label, "X_sclatent"),
        "mixing": query_mixing(ref.obsm["X_sclatent"], q.obsm["X_sclatent"]),
        "mixing without surgery": query_mixing(ref.obsm["X_sclatent"], without),
    }


def run_scvi(reference, query, batch_key, covariates, label, seed) -> dict:
    import scvi

    scvi.settings.seed = seed
    ref = reference.copy()
    scvi.model.SCVI.setup_anndata(ref, batch_key=batch_key, categorical_covariate_keys=covariates or None)
    # scvi-tools' advice for a reference to map onto: layer norm, no batch norm, covariates in the encoder
    model = scvi.model.SCVI(ref, use_layer_norm="both", use_batch_norm="none", encode_covariates=True)
    model.train(max_epochs=REFERENCE_EPOCHS, enable_progress_bar=False)
    ref.obsm["X_scVI"] = model.get_latent_representation()
    q = query.copy()
    start = time.perf_counter()
    mapped = scvi.model.SCVI.load_query_data(q, model)
    mapped.train(max_epochs=QUERY_EPOCHS, plan_kwargs={"weight_decay": 0.0}, enable_progress_bar=False)
    q.obsm["X_scVI"] = mapped.get_latent_representation()
    seconds = time.perf_counter() - start
    # after the mapping, so that it draws the same random numbers as without this measurement
    without = model.get_latent_representation(as_reference_batch(query, batch_key, ref.obs[batch_key].unique()))
    return {
        "seconds": seconds,
        "accuracy": accuracy(q, ref, label, "X_scVI"),
        "mixing": query_mixing(ref.obsm["X_scVI"], q.obsm["X_scVI"]),
        "mixing without surgery": query_mixing(ref.obsm["X_scVI"], without),
    }


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--resume", action="store_true", help="write the page from the stored runs (mapping.csv)")
    args = parser.parse_args(argv)
    if args.resume and args.output is not None and args.output.with_suffix(".csv").exists():
        results = pd.read_csv(args.output.with_suffix(".csv"))
        return report(results, results["seed"].nunique())
    for name in ("lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    rows = []
    for name, batch_key, ref_batches, covariates, label in CASES:
        reference, query = split(name, batch_key, ref_batches)
        for seed in args.seeds:
            run_args = (reference, query, batch_key, covariates, label, seed)
            runs = {
                "sclatent (norm='layer', n_latent=10)": (run_sclatent, REFERENCE),
                "sclatent defaults (norm='batch', n_latent=20)": (run_sclatent, {}),
                "scVI (layer norm, load_query_data)": (run_scvi, {}),
            }
            for method, (run, settings) in runs.items():
                result = run(*run_args, **settings)
                rows.append({"dataset": name, "method": method, "seed": seed, **result})
                print(name, method, seed, {k: round(v, 3) for k, v in result.items()}, flush=True)
    results = pd.DataFrame(rows)
    if args.output is not None:
        results.to_csv(args.output.with_suffix(".csv"), index=False)
    return report(results, len(args.seeds))


def report(results: pd.DataFrame, n_seeds: int) -> list[str]:
    lines = [
        f"{__doc__.split(chr(10), 1)[1].strip().split('Run:')[0].strip()}",
        "",
        f"Reference and query each trained {REFERENCE_EPOCHS} epochs, without early stopping; medians over "
        f"{n_seeds} seeds (the reference's and the query's). Raw values: `mapping.csv`.",
        "",
    ]
    metrics = ["seconds", "accuracy", "mixing", "mixing without surgery"]
    for name in results["dataset"].unique():
        sub = results[results["dataset"] == name].groupby("method", sort=False)[metrics].median()
        lines += [
            f"## {name}",
            "",
            "| method | query time (s) | accuracy | mixing | mixing without surgery |",
            "|---|---|---|---|---|",
        ]
        for method, row in sub.iterrows():
            cells = [f"{row['seconds']:.1f}", f"{row['accuracy']:.3f}", f"{row['mixing']:.3f}"]
            cells.append("" if np.isnan(row["mixing without surgery"]) else f"{row['mixing without surgery']:.3f}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        gains = (sub["mixing"] - sub["mixing without surgery"]).dropna()
        if not gains.empty:
            lines += [
                "",
                "Mixing with surgery minus mixing of the query encoded as a reference batch: "
                + "; ".join(f"{method} {gain:+.3f}" for method, gain in gains.items())
                + ".",
            ]
        lines.append("")
    return lines


if __name__ == "__main__":
    main()
