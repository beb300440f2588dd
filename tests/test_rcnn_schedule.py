"""`train.steps=N` bounds the whole R-CNN run: the separate box-regression stage follows it (a quarter,
rounded up) unless train.box_steps is set, the paper configs keep their schedules, and the header says
what will run before the first step."""
import json
from pathlib import Path

import pytest

from detect.cli import main as cli
from detect.config import load_config
from detect.engine.detection_config import DetectionConfig, schedule_line
from detect.utils.checkpoint import load_checkpoint
from detector_setup import tiny_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("name, steps, box_steps", [
    ("voc2007_vgg16_rcnn", 40000, 10000), ("voc0712_resnet101_rcnn", 80000, 20000),
    ("coco2017_googlenet_rcnn", 240000, 60000), ("bccd_vgg16_rcnn", 6000, 1500), ("voc2007_vgg16_fast", 40000, 0)])
def test_paper_configs_keep_their_schedules(name, steps, box_steps):
    cfg = load_config(DetectionConfig, CONFIGS / f"{name}.yaml")
    assert (cfg.train.steps, cfg.train.box_steps) == (steps, box_steps)


@pytest.mark.parametrize("steps, box_steps", [(1, 1), (2, 1), (5, 2), (8, 2), (40000, 10000)])
def test_overriding_train_steps_bounds_the_box_stage(steps, box_steps):
    cfg = load_config(DetectionConfig, CONFIGS / "voc2007_vgg16_rcnn.yaml", [f"train.steps={steps}"])
    assert cfg.train.box_steps == box_steps
    assert f"{steps} classifier steps, then {box_steps} box-regression steps" in schedule_line(cfg)


def test_an_explicit_box_steps_wins_whatever_the_order():
    for overrides in (["train.steps=2", "train.box_steps=7"], ["train.box_steps=7", "train.steps=2"]):
        cfg = load_config(DetectionConfig, CONFIGS / "voc2007_vgg16_rcnn.yaml", overrides)
        assert (cfg.train.steps, cfg.train.box_steps) == (2, 7)
    with pytest.raises(Exception, match="box_steps > 0"):
        load_config(DetectionConfig, CONFIGS / "voc2007_vgg16_rcnn.yaml", ["train.box_steps=0"])


def test_joint_training_says_so():
    cfg = load_config(DetectionConfig, CONFIGS / "voc2007_vgg16_fast.yaml", ["train.steps=3"])
    assert cfg.train.box_steps == 0
    assert schedule_line(cfg) == "steps    3 (fast mode; classifier and box regression trained jointly)"


def test_bounded_rcnn_run_stops_after_both_stages_and_says_so_first(tmp_path, capsys):
    """A separate-box-training run with only train.steps given trains steps + ceil(steps / 4) in all."""
    config = tiny_config(tmp_path, tmp_path / "cache", "rcnn", model={"box_training": "separate"},
                         train={"steps": 2, "checkpoint_every": 100})
    assert cli(["train", "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "rcnn: 2 classifier steps, then 1 box-regression steps" in printed
    assert printed.index("box-regression steps") < printed.index("checkpoint:")
    assert load_checkpoint(tmp_path / "run" / "last.pth")["step"] == 3
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [sorted(k for k in r if k.startswith("loss_")) for r in logged if r["split"] == "train"] == [
        ["loss_classifier"], ["loss_classifier"], ["loss_box"]]
