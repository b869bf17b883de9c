"""Guidance-scale selection on the validation split (``timeseries.tune``)."""

import json
import shutil

import pytest

pytest.importorskip("gluonts")

from diffsci.timeseries import tune  # noqa: E402
from diffsci.timeseries.data import load_dataset  # noqa: E402
from diffsci.timeseries.train import checkpoint_dir, load_predictor  # noqa: E402


def test_tune_guidance_scale_scores_every_scale_and_picks_the_lowest():
    p = load_predictor("m3_quarterly")
    before = p.config.guidance_scale
    val = list(load_dataset("m3_quarterly").validation().test)[:4]
    out = tune.tune_guidance_scale(p, val, (0.0, 4.0, 4.0), num_samples=8, solver="ddim", nfe=4)
    assert sorted(out["crps"]) == [0.0, 4.0]  # duplicates are scored once
    assert out["crps"][out["best"]] == min(out["crps"].values())
    # s = 0 is unconditional sampling: it ignores the context and must lose to guidance
    assert out["crps"][4.0] < out["crps"][0.0]
    assert p.config.guidance_scale == before  # the sweep leaves the predictor as it was
    with pytest.raises(ValueError, match="at least one"):
        tune.tune_guidance_scale(p, val, ())
    with pytest.raises(ValueError, match=">= 0"):
        tune.tune_guidance_scale(p, val, (1.0, -2.0))
    with pytest.raises(ValueError, match="empty"):
        tune.tune_guidance_scale(p, [], (1.0,))


def test_tune_dataset_writes_the_choice_and_keeps_the_weights(tmp_path):
    src = checkpoint_dir("m3_quarterly")
    dst = checkpoint_dir("m3_quarterly", tmp_path)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tune.json"))
    weights = (dst / "tsdiff.pt").read_bytes()
    rec = tune.tune_dataset(
        "m3_quarterly", (1.0, 8.0), series=3, num_samples=4, nfe=2, root=tmp_path
    )
    assert rec["best"] in (1.0, 8.0) and rec["validation_entries"] == 3
    assert json.loads((dst / "tune.json").read_text())["best"] == rec["best"]
    assert load_predictor("m3_quarterly", tmp_path).config.guidance_scale == rec["best"]
    with pytest.raises(ValueError, match="not one of its sweep"):
        tune.save_choice(dict(rec, best=3.0), tmp_path)
    assert (dst / "tsdiff.pt").read_bytes() == weights
    assert rec["command"].endswith("--scales 1 8 --series 3 --samples 4 --nfe 2")
    with pytest.raises(ValueError, match="series"):
        tune.tune_dataset("m3_quarterly", (1.0,), series=0, root=tmp_path)
    dry = tune.tune_dataset("m3_quarterly", (2.0,), 2, 4, 2, root=tmp_path, write=False)
    assert dry["best"] == 2.0
    assert load_predictor("m3_quarterly", tmp_path).config.guidance_scale == rec["best"]


def test_committed_scales_are_their_sweeps_minimum():
    """Each committed tune.json agrees with its predictor.json (a retrain drops it)."""
    from diffsci.timeseries.data import DATASETS

    for name in DATASETS:
        record = checkpoint_dir(name) / "tune.json"
        if record.exists():
            rec = json.loads(record.read_text())
            assert rec["crps"][str(float(rec["best"]))] == min(rec["crps"].values()), name
            assert load_predictor(name).config.guidance_scale == rec["best"], name
