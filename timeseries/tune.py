"""Pick the self-guidance scale s of a data set on its validation split.

    python -m diffsci.timeseries.tune --dataset pedestrian            # writes the choice
    python -m diffsci.timeseries.tune --dataset pedestrian --dry-run  # only reports

The paper tunes s per data set; so does this module. Each candidate scale forecasts the
validation split (``TSDataset.validation()``: the same rolling / last-horizon rule as the
test split, applied to the train series, so the test period is never looked at) and is
scored by CRPS (GluonTS mean weighted quantile loss). The lowest wins and is written into
the committed predictor's ``predictor.json`` (its ``ForecastConfig.guidance_scale``),
with the whole sweep in ``tune.json`` beside it.

The validation horizons lie inside the training range, so the model has seen them during
training: the scores are optimistic in absolute terms, but they only have to rank scales.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from diffsci.core.utils import atomic_write_text, check_positive_int

from .data import load_dataset
from .estimator import TSDiffPredictor
from .evaluate import score
from .train import TUNE_FILE, checkpoint_dir, load_predictor

__all__ = ["SCALES", "tune_guidance_scale", "tune_dataset", "command", "save_choice", "main"]

SCALES = (0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def tune_guidance_scale(
    predictor: TSDiffPredictor,
    validation: Sequence[dict[str, Any]],
    scales: Sequence[float] = SCALES,
    num_samples: int = 32,
    **changes: Any,
) -> dict[str, Any]:
    """CRPS of ``predictor`` on the ``validation`` entries for each guidance scale.

    ``changes`` override the rest of the forecasting config for the sweep (e.g.
    ``solver="ddim", nfe=10``); the energy is the predictor's. Returns ``{"best",
    "crps": {scale: value}, "seconds"}``; ties go to the smaller scale.
    """
    if not scales:
        raise ValueError("scales is empty: give at least one guidance scale")
    if any(not s >= 0 for s in scales):
        raise ValueError(f"guidance scales must be >= 0, got {list(scales)}")
    if not validation:
        raise ValueError("the validation set is empty")
    t0 = time.perf_counter()
    crps: dict[float, float] = {}
    for s in sorted(set(float(s) for s in scales)):
        p = predictor.with_config(guidance_scale=s, **changes)
        crps[s] = score(p, validation, num_samples)["crps"]
    best = min(crps, key=lambda s: (crps[s], s))
    return {"best": best, "crps": crps, "seconds": time.perf_counter() - t0}


def tune_dataset(
    name: str,
    scales: Sequence[float] = SCALES,
    series: int = 8,
    num_samples: int = 32,
    nfe: int = 10,
    root: str | Path | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Sweep the committed predictor of ``name`` on ``series`` validation entries (a fixed
    subset, also of rolling sets, to bound the cost) with DDIM ``nfe`` steps; write the
    best scale into its ``predictor.json`` unless ``write`` is False."""
    check_positive_int("series", series)
    ds = load_dataset(name).validation()
    val = list(ds.test)
    if series < len(val):  # evenly spread, so rolling sets keep several series / windows
        step = len(val) / series
        val = [val[int(i * step)] for i in range(series)]
    predictor = load_predictor(name, root)
    out = tune_guidance_scale(predictor, val, scales, num_samples, solver="ddim", nfe=nfe)
    record = {
        "dataset": name,
        "energy": predictor.config.energy,
        "validation_entries": len(val),
        "num_samples": num_samples,
        "solver": f"ddim, {nfe} steps",
        "crps": {str(k): v for k, v in out["crps"].items()},
        "best": out["best"],
        "seconds": round(out["seconds"], 1),
        "torch_threads": torch.get_num_threads(),
        "command": command(name, out["crps"], series, num_samples, nfe),
    }
    if write:
        save_choice(record, root)
    return record


def command(name: str, scales: Sequence[float], series: int, num_samples: int, nfe: int) -> str:
    """The command line that reruns a sweep."""
    grid = " ".join(f"{float(s):g}" for s in sorted(scales))
    return (
        f"python -m diffsci.timeseries.tune --dataset {name} --scales {grid} "
        f"--series {series} --samples {num_samples} --nfe {nfe}"
    )


def save_choice(record: dict[str, Any], root: str | Path | None = None) -> None:
    """Write a :func:`tune_dataset` record: ``record["best"]`` into the predictor's
    ``predictor.json`` and the record into ``tune.json`` (the weights stay as they are)."""
    folder = checkpoint_dir(record["dataset"], root)
    best = float(record["best"])
    if not (best >= 0 and best in {float(k) for k in record["crps"]}):
        raise ValueError(f"record's best scale {record['best']!r} is not one of its sweep")
    meta = json.loads((folder / "predictor.json").read_text())
    meta["forecast"]["guidance_scale"] = best
    atomic_write_text(folder / TUNE_FILE, json.dumps(record, indent=1))
    atomic_write_text(folder / "predictor.json", json.dumps(meta, indent=1))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", required=True, help="data set names, comma-separated")
    ap.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    ap.add_argument("--series", type=int, default=8, help="validation entries scored")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--nfe", type=int, default=10, help="DDIM steps of the sweep")
    ap.add_argument("--root", default=None, help="checkpoint root (default: the package's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dry-run", action="store_true", help="report, do not write")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.dataset.split(","):
        rec = tune_dataset(
            name, args.scales, args.series, args.samples, args.nfe, args.root, not args.dry_run
        )
        print(json.dumps(rec))


if __name__ == "__main__":
    main()
