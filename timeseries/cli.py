"""``diffsci timeseries``: forecast a packaged data set with a TSDiff checkpoint.

    diffsci timeseries forecast --dataset tourism_monthly --series 4 --output fan.png
    diffsci timeseries forecast --dataset pedestrian --checkpoint my-predictor/ --energy mse

The test entries of the first ``--series`` series (their last forecast window) are
forecast with TSDiff self-guidance (default: the committed checkpoint of the data set;
``--checkpoint`` takes any folder written by ``TSDiffPredictor.serialize``), scored by
GluonTS's Evaluator (CRPS = mean weighted quantile loss, ND, NRMSE) beside
SeasonalNaive, and drawn as a PNG of context, truth and forecast fan (quantile bands).
``diffsci timeseries train --dataset NAME`` retrains a checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .data import DATASETS

    ts = sub.add_parser("timeseries", help="TSDiff forecasting on GluonTS data sets")
    tsub = ts.add_subparsers(dest="ts_command", required=True)
    f = tsub.add_parser("forecast", help="forecast a data set's test windows, with a fan chart")
    f.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    f.add_argument("--checkpoint", default=None, help="a serialized TSDiffPredictor folder")
    f.add_argument("--series", type=int, default=4, help="series to forecast (default 4)")
    f.add_argument("--energy", default="quantile", choices=["quantile", "mse"])
    f.add_argument(
        "--scale", type=float, default=None, help="guidance scale s (default: the checkpoint's)"
    )
    f.add_argument("--solver", default="ddim", choices=["ddim", "ddpm"])
    f.add_argument("--nfe", type=int, default=20, help="sampler steps (ddim default 20)")
    f.add_argument("--samples", type=int, default=100, help="sample paths per series")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--output", default="forecast.png", help="PNG fan chart")
    f.set_defaults(func=_forecast)
    t = tsub.add_parser("train", help="train a data set's TSDiff checkpoint")
    t.add_argument("--dataset", required=True, help="data set names, comma-separated, or all")
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--out", default=None)
    t.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from .train import main

    argv = ["--dataset", args.dataset] + (["--steps", str(args.steps)] if args.steps else [])
    main(argv + (["--out", args.out] if args.out else []))
    return 0


def _forecast(args: argparse.Namespace) -> int:
    from gluonts.model.seasonal_naive import SeasonalNaivePredictor

    from .data import load_dataset
    from .estimator import ForecastConfig, TSDiffPredictor
    from .evaluate import SCALE_MS, forecast_and_score
    from .plot import plot_forecasts
    from .train import load_predictor

    if args.series < 1:
        raise ValueError(f"--series must be positive, got {args.series}")
    ds = load_dataset(args.dataset)
    if args.checkpoint:
        predictor = TSDiffPredictor.deserialize(Path(args.checkpoint))
    else:
        predictor = load_predictor(args.dataset)
    if predictor.prediction_length != ds.prediction_length:
        raise ValueError(
            f"the checkpoint forecasts {predictor.prediction_length} steps, "
            f"{args.dataset} needs {ds.prediction_length}"
        )
    # default s: the checkpoint's own for its energy (tuned by ``timeseries.tune``), else
    # the benchmark's squared-error scale
    if args.scale is not None:
        scale = args.scale
    elif args.energy == predictor.config.energy:
        scale = predictor.config.guidance_scale
    else:
        scale = SCALE_MS if args.energy == "mse" else ForecastConfig().guidance_scale
    nfe = args.nfe if args.solver == "ddim" else None
    predictor = predictor.with_config(
        energy=args.energy, guidance_scale=scale, solver=args.solver, nfe=nfe, seed=args.seed
    )
    # the last test window of each of the first series
    last = {}
    for e in ds.test:
        last[e["item_id"]] = e
    test = list(last.values())[: args.series]
    H = ds.prediction_length
    sn = SeasonalNaivePredictor(prediction_length=H, season_length=ds.seasonality)
    print(f"{args.dataset}: forecasting {len(test)} series, horizon {H}, {args.samples} paths")
    ours, forecasts = forecast_and_score(predictor, test, args.samples)
    theirs, naive = forecast_and_score(sn, test, 1)
    name = f"TSDiff-{'Q' if args.energy == 'quantile' else 'MS'}"
    print("| method | CRPS | ND | NRMSE | s / series |\n|---|---|---|---|---|")
    for label, r in ((name, ours), ("SeasonalNaive", theirs)):
        print(
            f"| {label} | {r['crps']:.4f} | {r['nd']:.4f} | {r['nrmse']:.4f} | "
            f"{r['s_per_series']:.2f} |"
        )
    path = plot_forecasts(
        test, {name: forecasts, "SeasonalNaive": naive}, args.output, max_series=args.series,
        title=f"{args.dataset}: {name} ({args.solver}, {args.nfe if nfe else 99} steps)",
    )  # fmt: skip
    print(f"wrote {path}")
    return 0
