"""The oracle benchmark's bookkeeping: per-seed distances, the paired comparison of two SMC
samplers, and the CLI's check of the oracle method names (a tiny run: d = 8, d_y = 1,
3 seeds, 64 samples, 10 steps)."""

import math

import pytest
import torch

from diffsci.restoration.evaluate import main, oracle_benchmark, paired_markdown


def test_oracle_rows_keep_per_seed_distances_and_pair_them():
    res = oracle_benchmark(
        dims=(8,),
        dys=(1,),
        seeds=3,
        samples=64,
        steps=10,
        methods={"mcgdiff": (16, {}), "afdps": (16, {})},
    )
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"floor", "mcgdiff", "afdps"}
    for r in rows.values():
        assert len(r["sw"]) == 3 and all(math.isfinite(v) and v > 0 for v in r["sw"])
        assert r["sw_mean"] == pytest.approx(sum(r["sw"]) / 3)
    diff = torch.tensor(rows["afdps"]["sw"]) - torch.tensor(rows["mcgdiff"]["sw"])
    table = paired_markdown(res)
    assert f"| 8 | 1 | {float(diff.mean()):+.2f} ± " in table
    assert f"{int((diff <= 0).sum())} of 3 |" in table


def test_cli_rejects_unknown_oracle_methods(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--part", "oracle", "--oracle-methods", "mcgdif", "--out", str(tmp_path / "o.json")])
    assert "unknown oracle methods ['mcgdif']" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def _regression_script():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[2] / "benchmarks" / "restoration_regression.py"
    spec = importlib.util.spec_from_file_location("restoration_regression", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_regression_reference_corrects_the_pseudo_inverse_and_refuses_bad_budgets():
    from diffsci.core.nets import UNet
    from diffsci.restoration.prior import PRIOR_NET
    from diffsci.restoration.tasks import make_operator

    mod = _regression_script()
    A = make_operator("sr4", (1, 32, 32))
    y = A.measure(torch.rand(2, 1, 32, 32) * 2 - 1, torch.Generator().manual_seed(0))
    with torch.no_grad():  # an untrained UNet outputs 0 (zero-initialised output conv)
        assert torch.equal(mod.regress(UNet(**PRIOR_NET), A, y), A.pinv(y))
    net, losses = mod.train_regressor("sr4", 2, "skimage", batch=2)
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        mod.train_regressor("sr4", 0, "skimage")
    with pytest.raises(ValueError, match="patch must be a positive integer"):
        mod.train_regressor("sr4", 1, "skimage", patch=0)


def test_regression_reference_can_correct_the_biharmonic_fill_of_the_box():
    from diffsci.core.nets import UNet
    from diffsci.restoration.classical import biharmonic
    from diffsci.restoration.prior import PRIOR_NET
    from diffsci.restoration.tasks import make_operator

    mod = _regression_script()
    A = make_operator("inpaint-box", (1, 16, 16))
    y = A.measure(torch.rand(2, 1, 16, 16) * 2 - 1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(mod.regress(UNet(**PRIOR_NET), A, y, "biharmonic"), biharmonic(A, y))
    with pytest.raises(ValueError, match="unknown start 'tv'"):
        mod.regress(UNet(**PRIOR_NET), A, y, "tv")
    net, losses = mod.train_regressor(
        "inpaint-box", 2, "skimage", batch=2, patch=16, start="biharmonic"
    )
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)


def test_image_benchmark_scores_a_central_crop_with_the_operator_scaled_to_it():
    from diffsci.restoration.evaluate import image_benchmark

    res = image_benchmark(["inpaint-box"], images=2, methods=["biharmonic"], crop=32)
    (row,) = res["rows"]
    assert res["size"] == 32 and len(row["psnr_per_image"]) == 2
    assert row["psnr_unobserved"] < row["psnr_observed"]  # the 16x16 hole is the hard part
    with pytest.raises(ValueError, match="crop must be in"):
        image_benchmark(["inpaint-box"], images=1, methods=["biharmonic"], crop=65)
