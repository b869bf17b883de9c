"""diffsci.timeseries: TSDiff forecasting, refinement and synthesis on GluonTS. Not built yet."""
