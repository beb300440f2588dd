"""Both region-classifier modes, end to end through the CLI on tiny inputs: train -> test -> infer."""
import json

import numpy as np
import pytest
import torch

from detect.cli import main as cli
from detect.utils.checkpoint import load_checkpoint
from detector_setup import tiny_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("proposals")


@pytest.mark.parametrize("mode", ["fast", "rcnn"])
def test_train_then_test_writes_checkpoint_results_and_metrics(tmp_path, cache, mode, capsys):
    config = tiny_config(tmp_path, cache, mode)
    assert cli(["train", "--config", str(config)]) == 0
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pth")
    assert checkpoint["step"] == 2 and checkpoint["kind"] == "detector"
    assert checkpoint["classes"] == ["circle", "rectangle", "triangle"]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r["split"] == "train"] == [1, 2]
    trained = [r for r in logged if r["split"] == "train"]
    assert all(np.isfinite(r["loss_classifier"]) and np.isfinite(r["loss_box"]) for r in trained)

    assert cli(["test", "--config", str(config), "--checkpoint", str(tmp_path / "run" / "last.pth"),
                "--out", str(tmp_path / "test")]) == 0
    printed = capsys.readouterr().out
    for metric in ("voc07", "voc12", "coco"):
        assert f"metric:  {metric}" in printed
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert set(metrics) >= {"voc07", "voc12", "coco"}
    assert 0.0 <= metrics["voc07"]["mAP"] <= 1.0
    assert metrics["voc07"]["num_images"] == 6
    results = json.loads((tmp_path / "test" / "detections.json").read_text())
    assert results and {"image_id", "category_id", "bbox", "score"} <= set(results[0])
    assert len(list((tmp_path / "test" / "voc").glob("comp4_det_test_*.txt"))) == 3


def test_infer_draws_boxes_and_writes_json(tmp_path, cache):
    from detect.data.shapes import shapes_split
    from detect.report.detections import write_image

    config = tiny_config(tmp_path, cache, "fast", train={"steps": 1})
    assert cli(["train", "--config", str(config)]) == 0
    image = write_image(tmp_path / "in" / "shape.jpg", shapes_split(30, 0, "test").load_image(0))
    out = tmp_path / "out"
    assert cli(["infer", "--checkpoint", str(tmp_path / "run" / "last.pth"), str(image), "--out", str(out),
                "--device", "cpu", "--draw-threshold", "0.0"]) == 0
    entries = json.loads((out / "detections.json").read_text())  # COCO results, as `detect test` writes
    assert entries, "a score threshold of 0 keeps detections"
    assert {"image_id", "category_id", "bbox", "score", "file_name"} == set(entries[0])
    assert entries[0]["image_id"] == "shape" and entries[0]["category_id"] in ("circle", "rectangle", "triangle")
    drawn = (out / "shape.png")
    from detect.data.images import read_image_rgb

    enlarged = read_image_rgb(image).repeat(3, axis=0).repeat(3, axis=1)  # 128 px images are drawn at 3x
    assert read_image_rgb(drawn).shape == enlarged.shape == (384, 384, 3)
    assert not np.array_equal(read_image_rgb(drawn), enlarged), "boxes were drawn on the image"


def test_detector_output_is_in_original_image_coordinates(tmp_path, cache):
    """Fast mode rescales to test_scale internally; boxes come back in the input image's pixels."""
    from detect.engine.detection_inference import load_detector

    config = tiny_config(tmp_path, cache, "fast", train={"steps": 1})
    assert cli(["train", "--config", str(config)]) == 0
    model, _, _ = load_detector(tmp_path / "run" / "last.pth")
    image = torch.rand(3, 96, 200)
    proposals = torch.tensor([[150.0, 50.0, 199.0, 95.0], [0.0, 0.0, 40.0, 30.0]])
    with torch.no_grad():
        out = model([image], [proposals])[0]
    assert len(out["boxes"]) > 0
    assert float(out["boxes"][:, 2].max()) <= 200.0 and float(out["boxes"][:, 3].max()) <= 96.0
    assert float(out["boxes"][:, 2].max()) > 128.0, "a box near the right edge must stay there after rescaling"


def test_separate_localisation_stage_trains_only_the_box_head(tmp_path, cache):
    """R-CNN style: classifier steps first (classification loss only), then localisation steps that
    use only the box loss and move only the localisation head."""
    config = tiny_config(tmp_path, cache, "rcnn", model={"box_training": "separate", "box_iou": 0.6},
                         train={"steps": 1, "box_steps": 1, "checkpoint_every": 1})
    assert cli(["train", "--config", str(config)]) == 0  # step 1 classifier, step 2 localisation
    before = load_checkpoint(tmp_path / "run" / "last.pth")["model"]
    assert cli(["train", "--config", str(config), "train.box_steps=2", "--resume"]) == 0  # step 3 localisation
    final = load_checkpoint(tmp_path / "run" / "last.pth")
    assert final["step"] == 3
    moved = {k for k, v in final["model"].items() if v.is_floating_point() and not torch.equal(v, before[k])}
    assert moved and all(k.startswith("localisation.") for k in moved), sorted(moved)[:5]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [sorted(k for k in r if k.startswith("loss_")) for r in logged if r["split"] == "train"] == [
        ["loss_classifier"], ["loss_box"], ["loss_box"]]
