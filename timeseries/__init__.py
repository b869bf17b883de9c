"""diffsci.timeseries: TSDiff forecasting, refinement and synthesis on GluonTS."""

from .data import DATASETS, TSDataset, dataset_info, load_dataset
from .model import (
    TSDiffNet,
    forecast,
    make_window,
    mean_scale,
    scale,
    tsdiff_process,
    unscale,
    window_sampler,
)
from .refine import refine, refine_energy, refine_forecast

__all__ = [
    "DATASETS",
    "TSDataset",
    "dataset_info",
    "load_dataset",
    "TSDiffNet",
    "tsdiff_process",
    "mean_scale",
    "scale",
    "unscale",
    "make_window",
    "window_sampler",
    "forecast",
    "refine",
    "refine_energy",
    "refine_forecast",
]
