"""TSDiff as a GluonTS estimator / predictor: frequencies and lags, the GluonTS window
pipeline, forecasts through make_evaluation_predictions + Evaluator, serialisation to
identical forecasts, refinement of a GluonTS base, and the errors users meet."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("gluonts")

from gluonts.evaluation import Evaluator, make_evaluation_predictions  # noqa: E402
from gluonts.model.predictor import Predictor  # noqa: E402
from gluonts.model.seasonal_naive import SeasonalNaivePredictor  # noqa: E402

from diffsci.timeseries.estimator import (  # noqa: E402
    ForecastConfig,
    RefinedPredictor,
    TSDiffEstimator,
    TSDiffPredictor,
    default_lags,
    season_length,
)

H, CTX = 6, 12


def _entries(n=4, T=80, seed=0):
    g = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = np.arange(T)
        y = 10 + 3 * np.sin(2 * np.pi * (t + i) / 6) + g.normal(0, 0.3, T)
        out.append({"start": pd.Period("2000-01", freq="M"), "target": y.astype(np.float32),
                    "item_id": f"s{i}"})  # fmt: skip
    return out


def _estimator(**kw):
    kw = {"steps": 20, "num_windows": 200, "progress": False, **kw}
    net = {"hidden": 16, "num_blocks": 1, "emb_dim": 16, "modes": 4}
    fc = ForecastConfig(solver="ddim", nfe=5, num_samples=8, batch_size=3)
    return TSDiffEstimator("M", H, CTX, lags=(6,), forecast=fc, **net, **kw)


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return _estimator().train(_entries())


@pytest.mark.parametrize(
    "freq, m, lags",
    [("M", 12, (12,)), ("Q", 4, (4,)), ("h", 24, (24, 168)), ("H", 24, (24, 168)),
     ("30min", 48, (48, 336)), ("D", 7, (7,)), ("W", 52, (52,)), ("Y", 1, ())],
)  # fmt: skip
def test_season_length_and_default_lags(freq, m, lags):
    assert season_length(freq) == m and default_lags(freq) == lags


def test_unknown_frequency_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown frequency 'fortnightly'"):
        season_length("fortnightly")
    with pytest.raises(ValueError, match="unsupported frequency 'B'"):
        TSDiffEstimator("B", 5)
    with pytest.raises(ValueError, match="does not divide a day"):
        season_length("7h")


def test_training_pool_is_gluonts_windows_and_seeded():
    est = _estimator()
    a, b = est.training_windows(_entries()), _estimator().training_windows(_entries())
    assert a.shape == (200, CTX + 6 + H) and torch.equal(a, b)
    assert not torch.equal(a, _estimator(seed=1).training_windows(_entries()))
    # every pooled window is a contiguous piece of one of the series
    series = [e["target"] for e in _entries()]
    w = a[0].numpy()
    hits = [np.any(np.all(np.lib.stride_tricks.sliding_window_view(y, len(w)) == w, 1))
            for y in series]  # fmt: skip
    assert any(hits)


def test_windows_with_missing_values_are_left_out():
    data = _entries()
    data[0]["target"][30:40] = np.nan
    est = _estimator()
    pool = est.training_windows(data)
    assert torch.isfinite(pool).all() and est.n_incomplete > 0


def test_short_series_errors():
    short = [{"start": pd.Period("2000-01", freq="M"), "target": np.ones(20, np.float32),
              "item_id": "tiny"}]  # fmt: skip
    with pytest.raises(ValueError, match="no series has the 24 points"):
        _estimator().training_windows(short)
    with pytest.raises(ValueError, match="1 series are shorter .* = 24 points: \\['tiny'\\]"):
        _estimator(on_short="raise").training_windows(_entries() + short)
    est = _estimator()
    est.training_windows(_entries() + short)
    assert est.n_short == 1
    with pytest.raises(ValueError, match="empty"):
        _estimator().training_windows([])


def test_forecasts_through_gluonts_evaluation(predictor):
    test = _entries(seed=1)
    fc, ts = make_evaluation_predictions(test, predictor, num_samples=8)
    fc, ts = list(fc), list(ts)
    assert len(fc) == 4
    for f, e in zip(fc, test):
        assert f.samples.shape == (8, H) and np.isfinite(f.samples).all()
        assert f.start_date == e["start"] + len(e["target"]) - H  # the held-out horizon
        assert f.item_id == e["item_id"]
    agg, _ = Evaluator(num_workers=0)(ts, fc)
    assert np.isfinite(agg["mean_wQuantileLoss"]) and np.isfinite(agg["ND"])


def test_same_seed_same_forecasts_other_seed_differs(predictor):
    test = _entries(seed=2)
    a = [f.samples for f in predictor.predict(test)]
    b = [f.samples for f in predictor.predict(test)]
    c = [f.samples for f in predictor.with_config(seed=1).predict(test)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_serialize_roundtrip_gives_identical_forecasts(predictor, tmp_path: Path):
    p = predictor.with_config(energy="mse", guidance_scale=0.1)
    p.serialize(tmp_path)
    q = Predictor.deserialize(tmp_path)  # GluonTS's entry point finds our class
    assert isinstance(q, TSDiffPredictor) and q.config == p.config and q.lags == (6,)
    test = _entries(seed=3)
    for f, g in zip(p.predict(test), q.predict(test)):
        assert np.array_equal(f.samples, g.samples)
    with pytest.raises(FileNotFoundError, match="no TSDiff predictor"):
        TSDiffPredictor.deserialize(tmp_path / "nothing")


def test_missing_context_values_and_short_histories(predictor):
    test = _entries(n=2, seed=4)
    test[0]["target"][-12:-2:2] = np.nan  # half of the last context points missing
    test[1] = dict(test[1], target=test[1]["target"][:10])  # shorter than ctx + lag
    out = list(predictor.predict(test))
    assert all(np.isfinite(f.samples).all() for f in out)


def test_all_nan_context_is_a_clear_error(predictor):
    test = _entries(n=1)
    test[0]["target"][-CTX:] = np.nan
    with pytest.raises(ValueError, match="'s0': the context window .* is all NaN"):
        list(predictor.predict(test))


def test_forecast_config_errors():
    with pytest.raises(ValueError, match="energy"):
        ForecastConfig(energy="l1").validate()
    with pytest.raises(ValueError, match="guidance_scale"):
        ForecastConfig(guidance_scale=-1.0).validate()
    with pytest.raises(ValueError, match="on_short"):
        _estimator(on_short="pad")


def test_refined_seasonal_naive(predictor):
    test = _entries(seed=5)
    base = SeasonalNaivePredictor(prediction_length=H, season_length=6)
    ref = RefinedPredictor(base, predictor, method="langevin", steps=3, num_samples=8)
    out = list(ref.predict(test))
    assert len(out) == 4 and all(f.samples.shape == (8, H) for f in out)
    # the Langevin refiner spreads the repeated point forecast into distinct paths
    assert all(np.isfinite(f.samples).all() and f.samples.std(0).mean() > 0 for f in out)
    with pytest.raises(ValueError, match="the base forecasts 3 steps"):
        RefinedPredictor(SeasonalNaivePredictor(prediction_length=3, season_length=6), predictor)
