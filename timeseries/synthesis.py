"""Synthesis with TSDiff and how to score synthetic series: the "Synthesize" part of
Kollovieh et al., "Predict, Refine, Synthesize: Self-Guiding Diffusion Models for
Probabilistic Time-Series Forecasting" (NeurIPS 2023), section on synthetic data.

TSDiff is trained unconditionally on windows of length L = context + prediction, each
mean-scaled by its context (``model.window_sampler``), so its samples are windows in
those scaled units. The paper judges them by what a forecaster learns from them:

* **Linear predictive score (LPS)**: a ridge regression from the first ``context_length``
  values of a window to the next ``prediction_length`` values, fitted on the synthetic
  windows and evaluated on the real test set (contexts mean-scaled, forecasts unscaled),
  by CRPS / ND / NRMSE;
* **train on synthetic, test on real (TSTR)**: a downstream forecaster (DeepAR,
  Transformer, linear) trained on the synthetic windows alone and evaluated on real
  test data.

Defaults, as amazon-science/unconditional-time-series-diffusion sets them
(``bin/tstr_experiment.py``, ``metrics/linear_pred_score.py``, ``model/linear``):
10 000 synthetic windows drawn in batches of 1000; the linear model is scikit-learn's
``Ridge()`` (alpha = 1, an unpenalised intercept) fitted without rescaling on the
synthetic windows (already in scaled units); each real test series is cut to its last
``context + prediction`` points, divided by mean |context| (floored at 1e-7), forecast,
and forecasts and targets multiplied back before GluonTS's ``Evaluator``; DeepAR and the
Transformer are trained with ``scaling=False``, ``time_features=[]`` (synthetic series
have no calendar: a mock start date) and ``lags_seq=get_lags_for_frequency(freq,
lag_ub=context_length)``. The metrics kept are ``mean_wQuantileLoss`` (their CRPS),
``ND`` and ``NRMSE``. Here the ridge is a closed-form float64 solve of our own, and by
default (``rescale=True``) each fitting window is mean-scaled again by its context, a
no-op up to rounding for windows already so scaled and what makes raw (real) windows
usable too.

GluonTS draws from the global torch / NumPy RNGs; the functions that run it take an
explicit ``torch.Generator`` and seed those globals from it inside a forked RNG state
(restored afterwards), so the same generator seed gives the same result.
"""

from __future__ import annotations

import contextlib
import math
import random
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from diffsci.core.processes import Process
from diffsci.core.samplers import sample
from diffsci.core.utils import check_positive_int
from diffsci.timeseries.model import check_lags, make_window, unscale, window_sampler

__all__ = [
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

f64 = torch.float64


# --------------------------------------------------------------------------------------
# Unconditional synthesis
# --------------------------------------------------------------------------------------
def synthesize(
    denoiser: Callable[..., torch.Tensor],
    process: Process,
    num_windows: int,
    length: int,
    lags: Sequence[int] = (),
    solver: str = "ddpm",
    nfe: int | None = None,
    schedule: Any = "uniform",
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Unconditional TSDiff samples (Kollovieh et al. 2023, synthetic data): windows
    (num_windows, length) of the target channel, in the mean-scaled units the model was
    trained in.

    Each batch starts from ``process.prior((b, length, 1 + len(lags)))`` and is integrated
    by ``core.sample``; the window returned is the denoiser's x0 at ``process.t_min``
    (as ``model.forecast``). ``nfe`` defaults to ``len(process.knots) - 1`` (99 DDPM
    steps on the official T = 100 grid, the last denoising being that final x0), or 100
    for a process without knots. Batches of ``batch_size`` (official: 1000) share one
    ``generator``, so a seed fixes the whole set.
    """
    check_positive_int("num_windows", num_windows)
    check_positive_int("length", length)
    check_positive_int("batch_size", batch_size)
    C = 1 + len(check_lags(lags))
    if nfe is None:
        knots = process.knots
        nfe = len(knots) - 1 if knots is not None else 100
    out = []
    with torch.no_grad():
        for start in range(0, num_windows, batch_size):
            b = min(batch_size, num_windows - start)
            x1 = process.prior((b, length, C), generator=generator, dtype=dtype, device=device)
            x = sample(
                denoiser,
                process,
                x1,
                solver=solver,
                nfe=nfe,
                schedule=schedule,
                generator=generator,
                progress=progress,
            )
            t_min = torch.full((b,), process.t_min, dtype=f64, device=x.device)
            x0 = denoiser(x, t_min)
            if x0.shape != x.shape:
                raise ValueError(f"the denoiser returned shape {tuple(x0.shape)} for {x.shape}")
            out.append(x0[..., 0].detach())
    return torch.cat(out)


# --------------------------------------------------------------------------------------
# The linear predictive score
# --------------------------------------------------------------------------------------
def _as_2d(name: str, x: Any) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, T), got {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must be real numbers, got dtype {x.dtype}")
    return x.detach().to("cpu", f64)


def _check_ridge(ridge: float) -> float:
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)):
        raise ValueError(f"ridge must be a number >= 0, got {ridge!r}")
    if not (math.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    return float(ridge)


def fit_ridge(
    X: torch.Tensor, Y: torch.Tensor, ridge: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge regression Y ~ X W + b with an unpenalised intercept, in closed form, float64:

        W = (Xc^T Xc + ridge I)^{-1} Xc^T Yc,   b = mean(Y) - mean(X) W,

    Xc, Yc the centred data (scikit-learn's ``Ridge(alpha=ridge)``, the linear model of
    the TSDiff LPS; ``ridge=0`` is least squares, the minimum-norm solution when Xc is
    rank-deficient). X (N, C), Y (N, H); returns W (C, H) and b (H,).
    """
    X, Y = _as_2d("X", X), _as_2d("Y", Y)
    ridge = _check_ridge(ridge)
    if X.shape[0] != Y.shape[0] or X.shape[0] == 0:
        raise ValueError(f"X and Y need the same number (>= 1) of rows, got {X.shape}, {Y.shape}")
    if not (bool(torch.isfinite(X).all()) and bool(torch.isfinite(Y).all())):
        raise ValueError("X and Y must be finite (no NaN/Inf)")
    x_bar, y_bar = X.mean(0), Y.mean(0)
    Xc, Yc = X - x_bar, Y - y_bar
    if ridge > 0:
        eye = torch.eye(X.shape[1], dtype=f64)
        W = torch.linalg.solve(Xc.T @ Xc + ridge * eye, Xc.T @ Yc)
    else:
        W = torch.linalg.lstsq(Xc, Yc, driver="gelsd").solution
    return W, y_bar - x_bar @ W


def _check_lengths(context_length: int, prediction_length: int) -> None:
    check_positive_int("context_length", context_length)
    check_positive_int("prediction_length", prediction_length)


def fit_linear_predictor(
    windows: torch.Tensor | np.ndarray,
    context_length: int,
    prediction_length: int,
    ridge: float = 1.0,
    rescale: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The LPS's linear forecaster (Kollovieh et al. 2023): ``fit_ridge`` from the
    context to the horizon of each window (N, T), T >= context + prediction (the last
    context + prediction points are used). With ``rescale`` each window is first divided
    by its context's mean |value| (``model.make_window``); the official code fits the
    synthetic windows as they are (``rescale=False``). Returns (W, b) in scaled units.

    Positive windows scaled to mean |context| = 1 all have context sum = context_length,
    a collinearity with the intercept: keep ``ridge > 0`` (as the official ``Ridge()``)
    for them; ``ridge=0`` then returns the minimum-norm one of equivalent solutions."""
    _check_lengths(context_length, prediction_length)
    w = _as_2d("windows", windows)
    need = context_length + prediction_length
    if w.shape[0] == 0:
        raise ValueError("windows is empty")
    if w.shape[1] < need:
        raise ValueError(
            f"windows have {w.shape[1]} points; context_length {context_length} + "
            f"prediction_length {prediction_length} = {need} are needed"
        )
    if not bool(torch.isfinite(w).all()):
        raise ValueError("windows must be finite (no NaN/Inf)")
    w = w[:, -need:]
    if rescale:
        w = make_window(
            w[:, :context_length], context_length, prediction_length, (), w[:, context_length:]
        )[0][..., 0]
    return fit_ridge(w[:, :context_length], w[:, context_length:], ridge)


def linear_forecast(
    W: torch.Tensor, b: torch.Tensor, past: torch.Tensor | np.ndarray, context_length: int
) -> torch.Tensor:
    """Point forecasts (B, H) in original units from histories ``past`` (B, P), P >=
    context_length (NaN = missing): the last context_length values, divided by their mean
    |value| (``model.mean_scale``; missing values enter as 0, as ``make_window`` fills
    them), through ``x W + b``, times the scale (the official LPS evaluation)."""
    check_positive_int("context_length", context_length)
    past = _as_2d("past", past)
    if W.shape[0] != context_length:
        raise ValueError(f"W has {W.shape[0]} rows for a context of {context_length}")
    if past.shape[1] < context_length:
        raise ValueError(
            f"past has {past.shape[1]} points; context_length {context_length} are needed"
        )
    H = W.shape[1]
    x, _, s = make_window(past, context_length, H)
    y = x[:, :context_length, 0] @ W.to(f64) + b.to(f64)
    return unscale(y, s)


def point_forecast_metrics(
    target: torch.Tensor | np.ndarray, forecast: torch.Tensor | np.ndarray
) -> dict[str, float]:
    """GluonTS's aggregate metrics of a point forecast yhat for targets y (B, H), over the
    finite targets:

        ND = sum |y - yhat| / sum |y|,
        NRMSE = sqrt(mean (y - yhat)^2) / mean |y|,
        mean_wQuantileLoss = mean_q 2 sum |(y - yhat)(1{y <= yhat} - q)| / sum |y|.

    For a point forecast (a Dirac, whose CRPS is |y - yhat|) the weighted quantile loss
    averaged over the symmetric levels q = 0.1, ..., 0.9 equals ND exactly (the mean q is
    1/2), so ``CRPS`` (= ``mean_wQuantileLoss``, the paper's CRPS estimate) is ND.
    """
    y, yhat = _as_2d("target", target), _as_2d("forecast", forecast)
    if y.shape != yhat.shape:
        raise ValueError(f"target {tuple(y.shape)} and forecast {tuple(yhat.shape)} differ")
    obs = torch.isfinite(y)
    if not bool(obs.any()):
        raise ValueError("target has no finite value")
    if not bool(torch.isfinite(yhat[obs]).all()):
        raise ValueError("the forecast has NaN/Inf where the target is observed")
    y, yhat = y[obs], yhat[obs]
    abs_sum = float(y.abs().sum())
    nd = float((y - yhat).abs().sum()) / abs_sum
    nrmse = math.sqrt(float(((y - yhat) ** 2).mean())) / float(y.abs().mean())
    return {"ND": nd, "NRMSE": nrmse, "mean_wQuantileLoss": nd, "CRPS": nd}


def split_test_entries(
    entries: Sequence[dict[str, Any]], context_length: int, prediction_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(past (B, context_length), future (B, prediction_length)) of GluonTS test entries:
    the last ``prediction_length`` points of each target are the horizon, the
    ``context_length`` before them the context (left-padded with NaN = missing where the
    entry is shorter, as GluonTS pads)."""
    _check_lengths(context_length, prediction_length)
    if len(entries) == 0:
        raise ValueError("no test entries")
    past, future = [], []
    for i, e in enumerate(entries):
        y = np.asarray(e["target"], dtype=np.float64)
        if y.ndim != 1 or len(y) <= prediction_length:
            raise ValueError(
                f"entry {i}: a 1-d target longer than prediction_length {prediction_length} "
                f"is needed, got shape {y.shape}"
            )
        ctx = y[:-prediction_length][-context_length:]
        past.append(np.concatenate([np.full(context_length - len(ctx), np.nan), ctx]))
        future.append(y[-prediction_length:])
    return torch.as_tensor(np.stack(past)), torch.as_tensor(np.stack(future))


def lps_windows_from_series(
    series: Sequence[Any],
    context_length: int,
    prediction_length: int,
    num_windows: int = 10_000,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random real windows (num_windows, context + prediction), each mean-scaled by its
    context, from training series (1-d arrays or GluonTS entries): the real-data
    reference of the LPS (the official ``sample_real``: 10 000 training windows). Fit the
    same ridge on them (``linear_predictive_score(real_windows, ...)``) to read a
    synthetic set's score against real data's. Missing values enter as 0."""
    _check_lengths(context_length, prediction_length)
    check_positive_int("num_windows", num_windows)
    seqs = [np.asarray(s["target"] if isinstance(s, dict) else s, dtype=np.float32) for s in series]
    draw = window_sampler(seqs, context_length, prediction_length)
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
    return draw(num_windows, generator)[..., 0]


def linear_predictive_score(
    synthetic: torch.Tensor | np.ndarray,
    real_test_past: torch.Tensor | np.ndarray,
    real_test_future: torch.Tensor | np.ndarray,
    context_length: int,
    prediction_length: int,
    ridge: float = 1.0,
    rescale: bool = True,
) -> dict[str, float]:
    """The linear predictive score of Kollovieh et al. 2023 (synthetic data section): fit
    a ridge regression context -> horizon on the ``synthetic`` windows (N, T)
    (``fit_linear_predictor``), forecast the real test horizons from their contexts
    (``linear_forecast``: mean-scaled, then unscaled) and score them
    (``point_forecast_metrics``: ND, NRMSE, and CRPS, which for this point forecast is ND).
    Lower is better. ``real_test_past`` (B, P >= context_length), ``real_test_future``
    (B, prediction_length): e.g. ``split_test_entries(dataset.test, ...)``. Official
    defaults: 10 000 windows, ``ridge=1`` (scikit-learn's ``Ridge()``), ``rescale=False``
    (here True, see the module notes)."""
    _check_lengths(context_length, prediction_length)
    future = _as_2d("real_test_future", real_test_future)
    past = _as_2d("real_test_past", real_test_past)
    if future.shape != (past.shape[0], prediction_length):
        raise ValueError(
            f"real_test_future must have shape ({past.shape[0]}, {prediction_length}), "
            f"got {tuple(future.shape)}"
        )
    W, b = fit_linear_predictor(synthetic, context_length, prediction_length, ridge, rescale)
    return point_forecast_metrics(future, linear_forecast(W, b, past, context_length))


# --------------------------------------------------------------------------------------
# Train on synthetic, test on real
# --------------------------------------------------------------------------------------
@contextlib.contextmanager
def _seeded(generator: torch.Generator | None) -> Iterator[None]:
    """Seed the global torch / NumPy / random RNGs from ``generator`` for the block and
    restore them after (GluonTS and Lightning draw from the globals)."""
    if generator is None:
        yield
        return
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def windows_to_entries(
    windows: torch.Tensor | np.ndarray, freq: str, start: str = "2023-01-01"
) -> list[dict[str, Any]]:
    """Synthetic windows (N, T) as GluonTS entries, each its own series with the mock
    start ``pandas.Period(start, freq)`` (synthetic series have no calendar; the official
    ``GluonTSNumpyDataset`` uses 2023)."""
    import pandas as pd

    w = _as_2d("synthetic_windows", windows)
    if w.shape[0] == 0:
        raise ValueError("no synthetic windows")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("synthetic windows must be finite (no NaN/Inf)")
    t0 = pd.Period(start, freq=freq)
    arr = w.numpy().astype(np.float32)
    return [{"start": t0, "target": arr[i], "item_id": f"synthetic_{i}"} for i in range(len(arr))]


def train_on_synthetic(
    synthetic_windows: torch.Tensor | np.ndarray,
    freq: str,
    prediction_length: int,
    context_length: int,
    estimator: Any = None,
    max_epochs: int = 5,
    num_batches_per_epoch: int = 20,
    batch_size: int = 32,
    generator: torch.Generator | None = None,
    start: str = "2023-01-01",
    **deepar_kwargs: Any,
) -> Any:
    """The "train" half of TSTR (Kollovieh et al. 2023): a GluonTS forecaster trained on
    the synthetic windows (N, T >= context + prediction) alone (``windows_to_entries``).

    ``estimator`` is any GluonTS estimator (its ``train(entries)`` is called); by default a
    small ``gluonts.torch.DeepAREstimator`` as the official TSTR sets it up: the windows
    are already scaled (``scaling=False``), no time features, ``lags_seq =
    get_lags_for_frequency(freq, lag_ub=context_length)``, here with ``max_epochs``,
    ``num_batches_per_epoch`` and ``batch_size`` small (the official runs use GluonTS's
    defaults, 100 epochs of 50 batches); ``deepar_kwargs`` go to the estimator
    (e.g. ``hidden_size``, ``num_layers``, ``trainer_kwargs``). Lightning runs without
    progress bar, model summary or logger; its checkpoint (GluonTS always adds a
    ``ModelCheckpoint``, so ``enable_checkpointing=False`` would be refused) goes to a
    temporary folder that is removed. Returns the trained GluonTS ``Predictor``; score it
    with ``tstr_score``.
    """
    _check_lengths(context_length, prediction_length)
    w = _as_2d("synthetic_windows", synthetic_windows)
    need = context_length + prediction_length
    if w.shape[1] < need:
        raise ValueError(
            f"synthetic windows have {w.shape[1]} points; context_length {context_length} + "
            f"prediction_length {prediction_length} = {need} are needed"
        )
    entries = windows_to_entries(w, freq, start)
    with tempfile.TemporaryDirectory(prefix="diffsci-tstr-") as tmp, _seeded(generator):
        if estimator is None:
            for name, v in (
                ("max_epochs", max_epochs),
                ("num_batches_per_epoch", num_batches_per_epoch),
                ("batch_size", batch_size),
            ):
                check_positive_int(name, v)
            from gluonts.time_feature import get_lags_for_frequency
            from gluonts.torch import DeepAREstimator

            trainer_kwargs = {
                "max_epochs": max_epochs,
                "enable_progress_bar": False,
                "enable_model_summary": False,
                "logger": False,
                "default_root_dir": tmp,
                **deepar_kwargs.pop("trainer_kwargs", {}),
            }
            kwargs = {
                "scaling": False,
                "time_features": [],
                "lags_seq": get_lags_for_frequency(freq, lag_ub=context_length),
                **deepar_kwargs,
            }
            estimator = DeepAREstimator(
                freq=freq,
                prediction_length=prediction_length,
                num_batches_per_epoch=num_batches_per_epoch,
                batch_size=batch_size,
                trainer_kwargs=trainer_kwargs,
                **kwargs,
            )
        elif deepar_kwargs:
            raise ValueError(
                f"options {sorted(deepar_kwargs)} are for the default DeepAR; an estimator was given"
            )
        h = getattr(estimator, "prediction_length", prediction_length)
        if h != prediction_length:
            raise ValueError(
                f"the estimator forecasts {h} steps, prediction_length is {prediction_length}"
            )
        return estimator.train(entries)


def tstr_score(
    predictor: Any,
    test_entries: Sequence[dict[str, Any]],
    context_length: int,
    num_samples: int = 100,
    scaling: bool = True,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """The "test on real" half of TSTR (Kollovieh et al. 2023): CRPS
    (``mean_wQuantileLoss``, also under ``CRPS``), ``ND`` and ``NRMSE`` of a GluonTS
    predictor on real test entries (the last ``predictor.prediction_length`` points of
    each are the target), from ``gluonts.evaluation.make_evaluation_predictions`` and
    ``Evaluator(num_workers=0)``.

    With ``scaling`` (for a predictor trained on scaled synthetic windows, as the
    official evaluation): each entry is cut to its last context + prediction points and
    divided by mean |context| (``model.mean_scale``), and forecasts and targets are
    multiplied back before scoring; ``scaling=False`` scores the entries as they are.
    Supports sample and quantile forecasts.
    """
    import pandas as pd
    from gluonts.evaluation import Evaluator, make_evaluation_predictions
    from gluonts.model.forecast import QuantileForecast, SampleForecast

    from diffsci.timeseries.model import mean_scale

    check_positive_int("context_length", context_length)
    check_positive_int("num_samples", num_samples)
    H = predictor.prediction_length
    if len(test_entries) == 0:
        raise ValueError("no test entries")
    entries, scales = [], []
    for i, e in enumerate(test_entries):
        y = np.asarray(e["target"], dtype=np.float32)
        if y.ndim != 1 or len(y) <= H:
            raise ValueError(
                f"test entry {i}: a 1-d target longer than {H} is needed, got shape {y.shape}"
            )
        start = e["start"] if isinstance(e["start"], pd.Period) else pd.Period(e["start"])
        s = 1.0
        if scaling:
            keep = min(len(y), context_length + H)
            start, y = start + (len(y) - keep), y[-keep:]
            s = float(mean_scale(torch.as_tensor(y[:-H], dtype=f64)[None])[0])
        entries.append(
            {"start": start, "target": y / np.float32(s), "item_id": e.get("item_id", str(i))}
        )
        scales.append(s)

    with _seeded(generator):
        fcst_it, ts_it = make_evaluation_predictions(entries, predictor, num_samples=num_samples)
        forecasts, tss = [], []
        for f, ts, s in zip(fcst_it, ts_it, scales):
            if isinstance(f, SampleForecast):
                f = SampleForecast(f.samples * s, start_date=f.start_date, item_id=f.item_id)
            elif isinstance(f, QuantileForecast):
                f = QuantileForecast(
                    f.forecast_array * s,
                    start_date=f.start_date,
                    forecast_keys=f.forecast_keys,
                    item_id=f.item_id,
                )
            else:
                raise ValueError(
                    f"tstr_score supports sample and quantile forecasts, got {type(f).__name__}"
                )
            forecasts.append(f)
            tss.append(ts * s)
    metrics, _ = Evaluator(num_workers=0)(tss, forecasts, num_series=len(entries))
    out = {k: float(metrics[k]) for k in ("mean_wQuantileLoss", "ND", "NRMSE")}
    out["CRPS"] = out["mean_wQuantileLoss"]
    return out
