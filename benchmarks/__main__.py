"""All benchmarks, one after the other, each page written to ``docs/benchmarks/``.

Run:  python -m benchmarks  (``make bench``); ``--only quality scale`` runs some of them. Further
options go to each benchmark, e.g. ``--only quality --methods sclatent`` reruns sclatent alone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks import autoencode_vs_scvi, defaults, disk, labels, mapping, precision, quality, scale, step, trajectory

PAGES = {
    "speed": ("Speed against scVI on PBMC 3k", autoencode_vs_scvi.main),
    "quality": ("Latent quality on every data set: sclatent, scVI, PCA, Harmony", quality.main),
    "defaults": ("The defaults study: candidate settings, chosen leave-one-data-set-out", defaults.main),
    "labels": ("Where PBMC 3k's labels come from, and what that does to the bio score", labels.main),
    "trajectory": ("Pseudotime on paul15: sclatent against scanpy's DPT", trajectory.main),
    "mapping": ("Mapping a query onto a reference: sclatent against scvi-tools", mapping.main),
    "scale": ("Cost against cells: 4k, 10k, 100k and 1M cells", scale.main),
    "disk": ("Training from disk against training in memory: 200k and 2M cells", disk.main),
    "step": ("Where a training step's time goes, and how fast a step could be", step.main),
    "precision": ("bfloat16 against float32 at 100,000 cells: held-out loss, clusters and time", precision.main),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(PAGES), default=list(PAGES))
    parser.add_argument("--output-dir", type=Path, default=Path("docs/benchmarks"))
    args, rest = parser.parse_known_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        title, run = PAGES[name]
        path = args.output_dir / f"{name}.md"
        start = time.perf_counter()
        body = run(["--output", str(path), *rest])
        minutes = (time.perf_counter() - start) / 60
        header = [
            f"# {title}",
            "",
            f"Made by `python -m benchmarks --only {name}` (part of `make bench`) "
            + (
                f"in {minutes:.0f} min. "
                if minutes >= 1
                else (
                    "from its stored runs (`--resume`). "
                    if {"--resume", "--report-only"} & set(rest)
                    else "in under a minute. "
                )
            )
            + autoencode_vs_scvi.machine(),
            "",
        ]
        path.write_text("\n".join(header + body) + "\n")


if __name__ == "__main__":
    main()
