"""The benchmarks' data and tables: resampled cells keep the source's look; ties are not shown as wins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from benchmarks._data import load_pbmc
from benchmarks.quality import DATASETS, report
from benchmarks.scale import resample

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "quality.csv"


def test_resampled_cells_look_like_the_source():
    source = load_pbmc()
    cells = resample(3_000, seed=1, chunk=1_000)
    assert cells.shape == (3_000, source.n_vars)
    assert list(cells.var_names) == list(source.var_names)
    data = cells.X.data
    assert (data > 0).all()
    assert np.array_equal(data, np.round(data))  # counts
    # a Poisson redraw around each cell's counts keeps library sizes and detected genes close to the source's
    lib_source, lib_new = np.asarray(source.X.sum(1)).mean(), np.asarray(cells.X.sum(1)).mean()
    assert abs(lib_new / lib_source - 1) < 0.1
    assert 0.6 < (cells.X.nnz / cells.n_obs) / (source.X.nnz / source.n_obs) < 1.0
    # and the cells differ from each other (not one cell copied)
    assert len({cells.X[i].nnz for i in range(100)}) > 20


def _table(lines: list[str], dataset: str) -> dict[str, dict[str, str]]:
    """The cells of one data set's table, by metric and method."""
    start = lines.index(f"## {dataset}")
    header = next(line for line in lines[start:] if line.startswith("| category"))
    methods = [c.strip() for c in header.strip("|").split("|")][2:]
    rows = {}
    for line in lines[lines.index(header, start) + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[1]] = dict(zip(methods, cells[2:], strict=True))
    return rows


def _rows(dataset: str, metric: str, category: str, values: dict[str, list[float]]) -> list[dict]:
    keys = {"sclatent": "X_sclatent", "scVI": "X_scVI", "PCA": "X_pca", "Harmony": "X_harmony"}
    return [
        {"dataset": dataset, "embedding": keys[m], "category": category, "metric": metric, "value": v, "seed": seed}
        for m, vs in values.items()
        for seed, v in enumerate(vs)
    ]


def test_quality_tables_show_medians_and_bold_winners_not_ties():
    three, five = "CellBench 3 lines × 2 technologies", "CellBench 5 lines × 3 plates"
    results = pd.DataFrame(
        # PCA and Harmony ran once; the seeded methods three times, shown as their median
        _rows(
            three,
            "Leiden NMI",
            "bio conservation",
            {"sclatent": [0.7, 0.898, 0.95], "scVI": [1.0, 1.0, 0.9], "PCA": [1.0], "Harmony": [1.0]},
        )
        + _rows(
            five,
            "Leiden NMI",
            "bio conservation",
            {"sclatent": [1.0] * 3, "scVI": [1.0] * 3, "PCA": [1.0], "Harmony": [1.0]},
        )
        + _rows(
            three,
            "fit seconds",
            "time",
            {"sclatent": [9.0, 10.0, 30.0], "scVI": [40.0] * 3, "PCA": [0.4], "Harmony": [0.1]},
        )
    )
    lines = report(results, {three: (450, 2000), five: (571, 2000)}, "quality.png")
    table = _table(lines, three)
    # scVI (median 1.0), PCA and Harmony share the best; sclatent's median is 0.898
    assert table["Leiden NMI"] == {"sclatent": "0.898", "scVI": "**1.000**", "PCA": "**1.000**", "Harmony": "**1.000**"}
    assert table["fit seconds"] == {"sclatent": "10.0", "scVI": "40.0", "PCA": "0.4", "Harmony": "**0.1**"}
    # every method at 1.000: nobody won
    assert _table(lines, five)["Leiden NMI"] == dict.fromkeys(["sclatent", "scVI", "PCA", "Harmony"], "1.000")


def test_published_quality_tables_bold_at_most_one_value():
    results = pd.read_csv(RESULTS)  # the published quality benchmark
    lines = report(results, {ds.name: (0, 0) for ds in DATASETS}, "quality.png")
    for ds in DATASETS:
        for metric, cells in _table(lines, ds.name).items():
            bold = {v.strip("*") for v in cells.values() if v.startswith("**")}
            assert len(bold) <= 1, (ds.name, metric, cells)
