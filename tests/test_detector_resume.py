"""A detector run stopped and resumed continues from the same step, to the same weights."""
import json

import pytest
import torch

from detect.cli import main as cli
from detect.utils.checkpoint import load_checkpoint
from detector_setup import tiny_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# 18 training images, 2 a step: an epoch is 9 steps; stop mid-epoch, or exactly at an epoch's end;
# with a weight average, both the trained weights and their average continue
@pytest.mark.parametrize("stop, total, average", [(2, 4, None), (9, 10, None), (2, 4, 0.9)])
def test_resumed_run_equals_uninterrupted_run(tmp_path, capsys, stop, total, average):
    cache = tmp_path / "proposals"
    run = {"steps": total, "weight_average": average}
    straight = tiny_config(tmp_path / "a", cache, train={**run, "out_dir": str(tmp_path / "a" / "run")})
    split = tiny_config(tmp_path / "b", cache, train={**run, "out_dir": str(tmp_path / "b" / "run")})
    assert cli(["train", "--config", str(straight)]) == 0
    assert cli(["train", "--config", str(split), f"train.steps={stop}"]) == 0
    assert load_checkpoint(tmp_path / "b" / "run" / "last.pth")["step"] == stop
    assert cli(["train", "--config", str(split), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out

    a = load_checkpoint(tmp_path / "a" / "run" / "last.pth")
    b = load_checkpoint(tmp_path / "b" / "run" / "last.pth")
    assert a["step"] == b["step"] == total
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == total
    assert (a["epoch"], a["epoch_position"]) == (b["epoch"], b["epoch_position"])
    weights = ["model", "trained_model"] if average else ["model"]
    assert ("trained_model" in a) == bool(average)
    for name in weights:
        for key, value in a[name].items():
            torch.testing.assert_close(b[name][key], value, rtol=0, atol=1e-6, msg=f"{name}: {key}")
    if average:
        assert a["average_updates"] == b["average_updates"] == total
    logged = [json.loads(line) for line in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in logged if r["split"] == "train"]
    assert steps == list(range(1, total + 1)), "the resumed run logs the steps after the first run's"
