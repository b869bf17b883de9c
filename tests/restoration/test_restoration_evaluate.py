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
