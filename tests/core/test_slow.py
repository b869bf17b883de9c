"""Long checks (python -m pytest -m slow): the full demo run reaches the mixture."""

import pytest

from diffsci.core.demo import run_demo


@pytest.mark.slow
def test_full_demo_reaches_the_monte_carlo_floor(tmp_path):
    """Demo defaults (3000 steps, seed 0). Measured at NFE 50: heun 0.074, euler 0.092,
    ddim 0.104, euler_maruyama 0.100, pc 0.112, ddpm 0.145, floor 0.078. Thresholds:
    heun < 0.12, every solver < 0.22."""
    res = run_demo(out=str(tmp_path), figure=False, progress=False)
    at50 = {name: row["50"] for name, row in res["sliced_w2"].items()}
    assert at50["heun"] < 0.12, at50
    assert all(v < 0.22 for v in at50.values()), at50
