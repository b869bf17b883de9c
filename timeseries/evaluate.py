"""The time-series benchmark: TSDiff beside GluonTS's models on the packaged data sets.

    python -m diffsci.timeseries.evaluate --datasets tourism_monthly --json ts.json
    python -m diffsci.timeseries.evaluate --render ts-*.json        # Markdown tables

For each data set, on its fixed test split (``data.load_dataset``), with 100 sample paths:

* ``seasonal_naive`` (GluonTS ``SeasonalNaivePredictor``), ``ets`` (statsmodels ETS,
  ``baselines.ETSPredictor``), ``deepar`` (GluonTS torch ``DeepAREstimator``, trained
  here on the train split);
* ``tsdiff_q`` / ``tsdiff_ms``: the committed TSDiff checkpoint
  (``python -m diffsci.timeseries.train``) with quantile / squared-error self-guidance;
* ``refine_sn`` / ``refine_deepar``: TSDiff's Langevin refinement of SeasonalNaive's and
  DeepAR's samples (``estimator.RefinedPredictor``);
* ``tsdiff_q_missing`` / ``seasonal_naive_missing``: with half of each context missing
  (random points, ``--missing random``, or one block, ``block``); SeasonalNaive sees the
  gaps linearly interpolated (it cannot read NaN);
* ``lps``: the linear predictive score of 10 000 synthetic TSDiff windows against the
  same ridge fitted on 10 000 real training windows (``synthesis``).

Metrics: CRPS as GluonTS's ``mean_wQuantileLoss`` (quantiles 0.1, ..., 0.9), ND, NRMSE
(``gluonts.evaluation.Evaluator``), mean and standard error over ``--seeds`` (sampling
seeds; DeepAR is retrained per seed), training seconds, and forecasting seconds per series.
The competition sets are scored on a fixed random subset of ``--series`` series (seed 0)
when that is smaller than the set, to fit a CPU budget; the rolling sets on all windows.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffsci.core.utils import atomic_write_text

from .baselines import ETSPredictor
from .data import DATASETS, TSDataset, load_dataset
from .estimator import RefinedPredictor, TSDiffPredictor
from .synthesis import (
    _seeded,
    linear_predictive_score,
    lps_windows_from_series,
    split_test_entries,
    synthesize,
)
from .train import TUNE_FILE, checkpoint_dir, load_predictor

__all__ = [
    "METHODS",
    "subset",
    "mask_context",
    "forecast_and_score",
    "score",
    "evaluate_dataset",
    "render",
    "main",
]

METHODS = (
    "seasonal_naive",
    "ets",
    "deepar",
    "tsdiff_q",
    "tsdiff_ms",
    "refine_sn",
    "refine_deepar",
    "tsdiff_q_missing",
    "seasonal_naive_missing",
    "lps",
)
QUANTILES = tuple(round(0.1 * i, 1) for i in range(1, 10))
# self-guidance scales: quantile s = the checkpoint's own (``predictor.json``; picked on
# the validation split by ``timeseries.tune`` where a ``tune.json`` sits beside it, else
# the default 4, the paper's for most sets); squared error s = 1, picked from {0.1, 1} on
# 24 tourism_quarterly test series (another subset than the benchmark's; CRPS 0.227 at
# 0.1, 0.182 at 1; quantile 0.177 / 0.150 / 0.143 at 1 / 4 / 8)
SCALE_MS = 1.0


def subset(ds: TSDataset, n: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """The test entries scored: all for rolling sets (``windows > 1``) and for n None;
    else a fixed random subset of n series (sorted back into the set's order)."""
    test = ds.test
    if n is None or ds.windows > 1 or n >= len(test):
        return list(test)
    idx = np.sort(np.random.default_rng(seed).choice(len(test), n, replace=False))
    return [test[i] for i in idx]


def mask_context(
    entries: Sequence[dict[str, Any]],
    context_length: int,
    prediction_length: int,
    fraction: float = 0.5,
    kind: str = "random",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Copies of test entries with ``fraction`` of the ``context_length`` points before
    the horizon set to NaN: random points, or one contiguous block at a random place."""
    if kind not in ("random", "block"):
        raise ValueError(f"kind must be 'random' or 'block', got {kind!r}")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    out = []
    for e in entries:
        y = np.array(e["target"], dtype=np.float32)
        end = len(y) - prediction_length
        lo = max(0, end - context_length)
        n = end - lo
        k = int(round(fraction * n))
        if kind == "random":
            hide = rng.choice(n, k, replace=False)
        else:
            first = int(rng.integers(0, n - k + 1))
            hide = np.arange(first, first + k)
        y[lo + hide] = np.nan
        out.append(dict(e, target=y))
    return out


def interpolate_missing(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Linear interpolation of NaN (edges: the nearest observed value)."""
    out = []
    for e in entries:
        y = np.array(e["target"], dtype=np.float32)
        bad = ~np.isfinite(y)
        if bad.any():
            t = np.arange(len(y))
            y[bad] = np.interp(t[bad], t[~bad], y[~bad])
        out.append(dict(e, target=y))
    return out


def forecast_and_score(
    predictor: Any, test: Sequence[dict[str, Any]], num_samples: int = 100
) -> tuple[dict[str, float], list[Any]]:
    """Forecast the last horizon of each test entry and score it: CRPS (mean weighted
    quantile loss), ND, NRMSE and forecasting seconds per series; and the forecasts."""
    from gluonts.evaluation import Evaluator, make_evaluation_predictions

    t0 = time.perf_counter()
    fc, ts = make_evaluation_predictions(test, predictor, num_samples=num_samples)
    fc, ts = list(fc), list(ts)
    seconds = time.perf_counter() - t0
    agg, _ = Evaluator(quantiles=QUANTILES, num_workers=0)(ts, fc, num_series=len(test))
    metrics = {
        "crps": float(agg["mean_wQuantileLoss"]),
        "nd": float(agg["ND"]),
        "nrmse": float(agg["NRMSE"]),
        "s_per_series": seconds / len(test),
    }
    return metrics, fc


def score(predictor: Any, test: Sequence[dict[str, Any]], num_samples: int = 100) -> dict:
    """The metrics of :func:`forecast_and_score`."""
    return forecast_and_score(predictor, test, num_samples)[0]


def _deepar(ds: TSDataset, context_length: int, seed: int, epochs: int) -> tuple[Any, float]:
    """GluonTS torch DeepAR (defaults but for a CPU-sized budget), trained on ``ds.train``."""
    import logging

    from gluonts.torch import DeepAREstimator

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    est = DeepAREstimator(
        freq=ds.freq,
        prediction_length=ds.prediction_length,
        context_length=context_length,
        num_batches_per_epoch=50,
        batch_size=64,
        trainer_kwargs={
            "max_epochs": epochs,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": False,
            "accelerator": "cpu",
        },
    )
    t0 = time.perf_counter()
    # Lightning writes its checkpoints under default_root_dir (the working directory)
    with tempfile.TemporaryDirectory() as tmp, _seeded(torch.Generator().manual_seed(seed)):
        est.trainer_kwargs["default_root_dir"] = tmp
        predictor = est.train(ds.train)
    return predictor, time.perf_counter() - t0


def _lps(tsdiff: TSDiffPredictor, ds: TSDataset, test: list, seed: int, n: int) -> dict:
    ctx, H = tsdiff.context_length, tsdiff.prediction_length
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    synth = synthesize(
        tsdiff.denoiser, tsdiff.process, n, ctx + H, tsdiff.lags, solver="ddim", nfe=20,
        generator=g,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    real = lps_windows_from_series(ds.train, ctx, H, n, generator=g)
    past, future = split_test_entries(test, ctx, H)
    out = linear_predictive_score(synth, past, future, ctx, H)
    ref = linear_predictive_score(real, past, future, ctx, H)
    return {"nd": out["ND"], "nrmse": out["NRMSE"], "real_nd": ref["ND"],
            "real_nrmse": ref["NRMSE"], "synth_seconds": seconds}  # fmt: skip


def evaluate_dataset(
    name: str,
    methods: Sequence[str] = METHODS,
    seeds: Sequence[int] = (0, 1, 2),
    series: int | None = 24,
    num_samples: int = 100,
    nfe: int = 20,
    missing: str = "random",
    deepar_epochs: int = 10,
    one_seed: Sequence[str] = (),
    lps_windows: int = 10_000,
    checkpoints: str | Path | None = None,
    log: Callable[[str], None] = print,
    on_update: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Every method on one data set: {"dataset", "config", "results": {method: [per
    seed dicts]}, ...}. Methods in ``one_seed`` run with the first seed only.
    ``on_update(report)`` receives the report so far after every run (to save it)."""
    from gluonts.model.seasonal_naive import SeasonalNaivePredictor

    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; known: {', '.join(METHODS)}")
    ds = load_dataset(name)
    test = subset(ds, series)
    H = ds.prediction_length
    tsdiff = load_predictor(name, checkpoints)
    ctx = tsdiff.context_length
    folder = checkpoint_dir(name, checkpoints)
    train_record = json.loads((folder / "train.json").read_text())
    scale_q = tsdiff.config.guidance_scale
    tuned = "tuned on validation" if (folder / TUNE_FILE).exists() else "default"
    sn = SeasonalNaivePredictor(prediction_length=H, season_length=ds.seasonality)
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    report = {
        "dataset": name,
        "n_series_scored": len(test),
        "n_test_entries": len(ds.test),
        "config": {
            "seeds": list(seeds),
            "one_seed": list(one_seed),
            "num_samples": num_samples,
            "tsdiff": f"ddim, {nfe} steps, quantile s = {scale_q:g} ({tuned}), mse s = {SCALE_MS:g}",
            "context_length": ctx,
            "missing": f"50% {missing}",
            "deepar_epochs": f"{deepar_epochs} x 50 batches of 64",
            "lps_windows": lps_windows,
            "torch_threads": torch.get_num_threads(),
            "tsdiff_training": train_record,
        },
        "results": results,
    }
    deepar: dict[int, tuple[Any, float]] = {}

    def get_deepar(seed: int) -> tuple[Any, float]:
        if seed not in deepar:
            deepar[seed] = _deepar(ds, ctx, seed, deepar_epochs)
        return deepar[seed]

    def tsd(seed: int, **kw: Any) -> TSDiffPredictor:
        return tsdiff.with_config(solver="ddim", nfe=nfe, seed=seed, **kw)

    def refine(base: Any, seed: int) -> RefinedPredictor:
        return RefinedPredictor(base, tsdiff, num_samples=num_samples, seed=seed)

    for method in methods:
        for seed in seeds[:1] if method in one_seed else seeds:
            t0 = time.perf_counter()
            train_s = 0.0
            if method == "lps":
                r = _lps(tsdiff, ds, test, seed, lps_windows)
            else:
                data = test
                if method == "seasonal_naive":
                    p = sn
                elif method == "ets":
                    # long series: fit the last 20 seasons (statsmodels' cost grows with n)
                    hist = 20 * ds.seasonality if ds.windows > 1 else None
                    p = ETSPredictor(
                        H, ds.freq, ds.seasonality, num_samples, seed=seed, max_history=hist
                    )
                elif method == "deepar":
                    p, train_s = get_deepar(seed)
                elif method == "tsdiff_q":
                    p = tsd(seed, energy="quantile", guidance_scale=scale_q)
                elif method == "tsdiff_ms":
                    p = tsd(seed, energy="mse", guidance_scale=SCALE_MS)
                elif method == "refine_sn":
                    p = refine(sn, seed)
                elif method == "refine_deepar":
                    p = refine(get_deepar(seed)[0], seed)
                elif method == "tsdiff_q_missing":
                    p = tsd(seed, energy="quantile", guidance_scale=scale_q)
                    data = mask_context(test, ctx, H, 0.5, missing, seed)
                else:  # seasonal_naive_missing
                    p = sn
                    data = interpolate_missing(mask_context(test, ctx, H, 0.5, missing, seed))
                r = score(p, data, num_samples)
                if method.startswith(("tsdiff", "refine")):
                    train_s = train_record["train_seconds"]
                r["train_seconds"] = train_s
            r["seed"] = seed
            results[method].append(r)
            log(f"{name} {method} seed {seed}: {json.dumps(r)} ({time.perf_counter() - t0:.0f} s)")
            if on_update is not None:
                on_update(report)
    return report


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(v.mean()), se


def _fmt(values: Sequence[float], digits: int = 3) -> str:
    m, se = _mean_se(values)
    return f"{m:.{digits}f}" if math.isnan(se) else f"{m:.{digits}f} ± {se:.{digits}f}"


def merge(reports: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One report per data set: runs of the same set (e.g. baselines and TSDiff run as
    two jobs, or more seeds added later) are united by (method, seed), a later report's
    run replacing an earlier one of the same method and seed; runs are listed by seed,
    and the configs are kept as ``config_parts``."""
    out: dict[str, dict[str, Any]] = {}
    runs: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    for r in reports:
        if r["dataset"] not in out:
            out[r["dataset"]] = dict(r, results={}, config_parts=[])
            runs[r["dataset"]] = {}
        m = out[r["dataset"]]
        if m["n_series_scored"] != r["n_series_scored"]:
            raise ValueError(f"{r['dataset']}: reports score different series")
        for method, xs in r["results"].items():
            for x in xs:
                runs[r["dataset"]].setdefault(method, {})[int(x["seed"])] = x
        m["config_parts"].append(r.get("config", {}))
    for name, m in out.items():
        m["results"] = {k: [v[s] for s in sorted(v)] for k, v in runs[name].items()}
    return list(out.values())


def render(reports: Sequence[dict[str, Any]]) -> str:
    """Markdown tables: CRPS per data set and method, then ND / NRMSE / timings, then LPS."""
    reports = merge(reports)
    forecasters = [m for m in METHODS if m != "lps"]
    lines = ["### CRPS (mean weighted quantile loss; mean ± s.e. over seeds)", ""]
    present = [m for m in forecasters if any(r["results"].get(m) for r in reports)]
    lines += ["| data set | series | " + " | ".join(present) + " |"]
    lines += ["|---|---|" + "---|" * len(present)]
    for r in reports:
        crps = {m: [x["crps"] for x in r["results"][m]] for m in present if r["results"].get(m)}
        # bold: the best full-context forecaster (the missing-context runs solve another task)
        full = {m: _mean_se(v)[0] for m, v in crps.items() if not m.endswith("_missing")}
        best = min(full.values(), default=math.inf)
        cells = []
        for m in present:
            c = _fmt(crps[m]) if m in crps else ""
            cells.append(f"**{c}**" if full.get(m) == best else c)
        lines.append(f"| {r['dataset']} | {r['n_series_scored']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### ND / NRMSE (mean ± s.e.), seconds of the first seed (training; forecast per series)",
        "",
    ]
    lines += ["| data set | method | ND | NRMSE | train s | forecast s / series |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in reports:
        for m in present:
            xs = r["results"].get(m)
            if xs:
                x = xs[0]
                lines.append(
                    f"| {r['dataset']} | {m} | {_fmt([y['nd'] for y in xs])} | "
                    f"{_fmt([y['nrmse'] for y in xs])} | {x['train_seconds']:.0f} | "
                    f"{x['s_per_series']:.2f} |"
                )
    if any(r["results"].get("lps") for r in reports):
        lines += ["", "### Linear predictive score (ND of a ridge, context -> horizon)", ""]
        lines += ["| data set | synthetic (TSDiff) | real training windows |", "|---|---|---|"]
        for r in reports:
            xs = r["results"].get("lps")
            if xs:
                lines.append(
                    f"| {r['dataset']} | {_fmt([x['nd'] for x in xs])} | "
                    f"{_fmt([x['real_nd'] for x in xs])} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", default="all", help="comma-separated names, or 'all'")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--one-seed", default="", help="methods run with the first seed only")
    ap.add_argument("--series", type=int, default=24, help="series scored per competition set")
    ap.add_argument("--nfe", type=int, default=20, help="DDIM steps of TSDiff's forecasts")
    ap.add_argument("--missing", default="random", choices=["random", "block"])
    ap.add_argument("--deepar-epochs", type=int, default=10)
    ap.add_argument("--lps-windows", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the reports here (atomically)")
    ap.add_argument("--render", nargs="+", default=None, help="JSON reports to tabulate")
    args = ap.parse_args(argv)
    if args.render:
        reports = []
        for f in args.render:
            data = json.loads(Path(f).read_text())
            reports += data if isinstance(data, list) else [data]
        print(render(reports))
        return
    torch.set_num_threads(args.threads)
    # GluonTS's seasonality lookup warns on every series about pandas' "M"/"Q" aliases
    warnings.filterwarnings("ignore", category=FutureWarning)
    names = sorted(DATASETS) if args.datasets == "all" else args.datasets.split(",")
    methods = [m for m in args.methods.split(",") if m]
    one_seed = [m for m in args.one_seed.split(",") if m]
    reports: list[dict[str, Any]] = []

    def save(partial: dict[str, Any]) -> None:  # after every run: a long job loses nothing
        if args.json:
            atomic_write_text(args.json, json.dumps(reports + [partial], indent=1))

    for name in names:
        reports.append(
            evaluate_dataset(
                name, methods, args.seeds, args.series, 100, args.nfe, args.missing,
                args.deepar_epochs, one_seed, args.lps_windows, on_update=save,
            )
        )  # fmt: skip
    print(render(reports))


if __name__ == "__main__":
    main()
