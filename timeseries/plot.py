"""Fan charts of probabilistic forecasts: history, truth, median and quantile bands.

``plot_forecasts`` draws GluonTS forecasts (``SampleForecast`` or any ``Forecast``
with ``quantile(q)``) against their data entries, one panel per series, in the
"fan chart" style of Hyndman & Athanasopoulos, *Forecasting: Principles and
Practice* (prediction intervals shaded around the point forecast). It uses a bare
``matplotlib.figure.Figure`` (Agg canvas, no pyplot state) and writes the PNG
atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from diffsci.core.utils import atomic_write

__all__ = ["plot_forecasts"]

_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def _bands(quantiles: Sequence[float]) -> list[tuple[float, float]]:
    qs = sorted(float(q) for q in quantiles)
    if any(not 0.0 < q < 1.0 for q in qs):
        raise ValueError(f"quantiles must lie in (0, 1), got {tuple(quantiles)}")
    if len(qs) % 2:
        raise ValueError(
            f"quantiles must come in pairs (lower, upper) of bands, got {len(qs)}: {tuple(qs)}"
        )
    bands = [(qs[i], qs[-1 - i]) for i in range(len(qs) // 2)]  # outermost first
    if any(lo >= hi for lo, hi in bands):
        raise ValueError(f"quantile pairs must have lower < upper, got {bands}")
    return bands


def _offset(entry: dict[str, Any], forecast: Any, k: int) -> int:
    """Position of the forecast's first step in the entry's target."""
    start, fstart = entry["start"], forecast.start_date
    try:
        offset = (fstart - start).n
    except (TypeError, ValueError, AttributeError) as err:  # IncompatibleFrequency is a ValueError
        raise ValueError(
            f"series {k}: forecast start {fstart!r} is not comparable with entry start {start!r}"
        ) from err
    n = len(entry["target"])
    if not 0 <= offset <= n:
        raise ValueError(
            f"series {k}: the forecast starts at {fstart} (step {offset} of the entry), "
            f"outside the entry's {n} points starting {start}"
        )
    return offset


def plot_forecasts(
    entries: Sequence[dict[str, Any]],
    forecasts: Sequence[Any] | Mapping[str, Sequence[Any]],
    path: str | os.PathLike,
    context: int | None = None,
    quantiles: Sequence[float] = (0.05, 0.25, 0.75, 0.95),
    title: str | None = None,
    max_series: int = 4,
    dpi: int = 100,
) -> Path:
    """Write a PNG of forecast fan charts, one panel per series (the first ``max_series``).

    Each panel shows the last ``context`` points of history before the forecast start,
    the truth over the horizon when the entry holds it, and for each method the
    forecast median (``forecast.quantile(0.5)``) with shaded bands between paired
    quantiles (lowest with highest, and so on inwards: the default draws the 50% and
    90% central intervals), a fan chart as in Hyndman & Athanasopoulos, *Forecasting:
    Principles and Practice*.

    Alignment comes from the forecast: its ``start_date`` locates the forecast in the
    entry's target, so ``entries`` may be GluonTS test entries (whose last ``H`` points
    are the truth; the truth is drawn) or the input entries the forecasts were made
    from (no truth drawn).

    Args:
        entries: GluonTS data entries (``"start"`` a ``pandas.Period``, ``"target"``).
        forecasts: a list of forecasts, one per entry, or a dict ``method name -> list``
            to overlay several methods in different colours.
        path: the PNG file to write (atomically: a temp file in the same folder, then
            renamed over ``path``).
        context: history points shown before the forecast start (default: three
            horizons).
        quantiles: band edges, an even number of levels in (0, 1).
        title: the figure title.
        max_series: the most panels drawn.
        dpi: the PNG resolution.

    Returns:
        ``path`` as a ``pathlib.Path``.

    Raises:
        ValueError: the entries and a method's forecasts differ in number, a forecast
            does not fall inside its entry (or has another frequency), the item ids
            disagree, or an argument is out of range.
    """
    from matplotlib.figure import Figure

    entries = list(entries)
    methods = (
        {str(k): list(v) for k, v in forecasts.items()}
        if isinstance(forecasts, Mapping)
        else {"forecast": list(forecasts)}
    )
    if not entries:
        raise ValueError("no entries to plot")
    if not methods:
        raise ValueError("no forecasts to plot")
    for name, fcs in methods.items():
        if len(fcs) != len(entries):
            raise ValueError(
                f"{len(entries)} entries but {len(fcs)} forecasts"
                + (f" for {name!r}" if len(methods) > 1 else "")
            )
    if isinstance(max_series, bool) or not isinstance(max_series, int) or max_series < 1:
        raise ValueError(f"max_series must be a positive integer, got {max_series!r}")
    if context is not None and (isinstance(context, bool) or int(context) < 0):
        raise ValueError(f"context must be a non-negative integer, got {context!r}")
    bands = _bands(quantiles)

    n_panels = min(max_series, len(entries))
    ncols = 1 if n_panels == 1 else 2
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(6.4 * ncols, 3.0 * nrows + (0.4 if title else 0.0)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)

    for k in range(n_panels):
        ax, entry = axes[k], entries[k]
        target = np.asarray(entry["target"], dtype=np.float64)
        first = next(iter(methods.values()))[k]
        offset = _offset(entry, first, k)
        h = first.prediction_length
        ctx = 3 * h if context is None else int(context)
        index = pd.period_range(entry["start"], periods=len(target)).to_timestamp()
        lo = max(0, offset - ctx)
        ax.plot(index[lo:offset], target[lo:offset], color="black", lw=1.2, label="history")
        end = min(len(target), offset + h)
        if end > offset:
            # joined to the last history point so the line has no gap
            j = max(offset - 1, 0)
            ax.plot(index[j:end], target[j:end], color="black", lw=1.2, ls="--", label="truth")

        for m, (name, fcs) in enumerate(methods.items()):
            fc = fcs[k]
            if _offset(entry, fc, k) != offset or fc.prediction_length != h:
                raise ValueError(f"series {k}: the forecasts of the methods are not aligned")
            item = entry.get("item_id")
            if item is not None and fc.item_id is not None and str(fc.item_id) != str(item):
                raise ValueError(f"series {k}: entry {item!r} but forecast for {fc.item_id!r}")
            color = _COLORS[m % len(_COLORS)]
            fidx = pd.period_range(fc.start_date, periods=h).to_timestamp()
            shade = 0.5 / len(methods)
            for b, (q_lo, q_hi) in enumerate(bands):
                ax.fill_between(
                    fidx,
                    np.asarray(fc.quantile(q_lo), dtype=np.float64),
                    np.asarray(fc.quantile(q_hi), dtype=np.float64),
                    color=color,
                    alpha=shade * (b + 1) / len(bands),
                    lw=0,
                    label=f"{name} {round(100 * (q_hi - q_lo))}%",
                )
            ax.plot(
                fidx,
                np.asarray(fc.quantile(0.5), dtype=np.float64),
                color=color,
                lw=1.6,
                label=f"{name} median",
            )
        item = entry.get("item_id")
        ax.set_title(f"series {item}" if item is not None else f"series {k}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize=8)
    if title:
        fig.suptitle(title)

    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    return path
