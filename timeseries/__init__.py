"""diffsci.timeseries: TSDiff forecasting, refinement and synthesis on GluonTS."""

from .baselines import ETSPredictor
from .data import DATASETS, TSDataset, dataset_info, load_dataset
from .estimator import (
    ForecastConfig,
    RefinedPredictor,
    TSDiffEstimator,
    TSDiffPredictor,
    default_lags,
    season_length,
)
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
from .plot import plot_forecasts
from .refine import refine, refine_energy, refine_forecast
from .synthesis import (
    fit_linear_predictor,
    fit_ridge,
    linear_forecast,
    linear_predictive_score,
    lps_windows_from_series,
    point_forecast_metrics,
    split_test_entries,
    synthesize,
    train_on_synthetic,
    tstr_score,
    windows_to_entries,
)

__all__ = [
    "TSDiffEstimator",
    "TSDiffPredictor",
    "ForecastConfig",
    "RefinedPredictor",
    "ETSPredictor",
    "default_lags",
    "season_length",
    "plot_forecasts",
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
    "synthesize",
    "fit_ridge",
    "fit_linear_predictor",
    "linear_forecast",
    "point_forecast_metrics",
    "split_test_entries",
    "lps_windows_from_series",
    "linear_predictive_score",
    "windows_to_entries",
    "train_on_synthetic",
    "tstr_score",
]
