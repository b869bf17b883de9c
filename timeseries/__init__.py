"""diffsci.timeseries: TSDiff forecasting, refinement and synthesis on GluonTS."""

from .data import DATASETS, TSDataset, dataset_info, load_dataset

__all__ = ["DATASETS", "TSDataset", "dataset_info", "load_dataset"]
