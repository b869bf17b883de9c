import json

from diffsci.cli.main import main
from diffsci.core.demo import DEMO_SOLVERS


def test_demo_writes_table_json_checkpoint_and_png(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--steps", "60", "--samples", "300", "--quiet", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| heun |" in printed and "Monte-Carlo floor" in printed
    res = json.loads((out / "results.json").read_text())
    assert set(res["sliced_w2"]) == set(DEMO_SOLVERS)
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "demo.pt").stat().st_size > 0


def test_demo_bad_input_is_one_clear_line(tmp_path, capsys):
    rc = main(["demo", "--steps", "0", "--quiet", "--out", str(tmp_path)])
    assert rc == 2
    assert "steps must be a positive integer" in capsys.readouterr().err
