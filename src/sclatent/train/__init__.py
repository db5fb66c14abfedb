"""Training: the Lightning plan, the data path and callbacks."""

from ._callbacks import BestWeights, EpochProgressBar, WarmEarlyStopping
from ._data import (
    BatchIndexSampler,
    CellData,
    DiskBatches,
    check_fit_arguments,
    check_groups,
    cpu_has_fast_bf16,
    holdout_split,
    make_loader,
)
from ._fit import FitOutcome, history_frame, run_fit
from ._plan import TrainingPlan

__all__ = [
    "BatchIndexSampler",
    "BestWeights",
    "CellData",
    "DiskBatches",
    "EpochProgressBar",
    "FitOutcome",
    "TrainingPlan",
    "WarmEarlyStopping",
    "check_fit_arguments",
    "check_groups",
    "cpu_has_fast_bf16",
    "history_frame",
    "holdout_split",
    "make_loader",
    "run_fit",
]
