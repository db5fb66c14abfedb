"""Training: the Lightning plan, the data path and callbacks."""

from ._callbacks import BestWeights, EpochProgressBar, WarmEarlyStopping
from ._data import BatchIndexSampler, CellData, holdout_split, make_loader
from ._plan import TrainingPlan

__all__ = [
    "BatchIndexSampler",
    "BestWeights",
    "CellData",
    "EpochProgressBar",
    "TrainingPlan",
    "WarmEarlyStopping",
    "holdout_split",
    "make_loader",
]
