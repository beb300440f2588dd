"""`detect test` with the training config reads a checkpoint as it was trained: the checkpoint's model section
(here model.roi_context, fc_width and the RPN's proposals, set by overrides at training), the config's test-time keys."""
import json

import pytest
import yaml

from detect.cli import main as cli
from detect.config import load_config
from detect.engine.detection_config import DetectionConfig
from detect.engine.detection_inference import load_detector
from detector_setup import tiny_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TRAINED_WITH = ["model.roi_context=1.5", "model.backbone_options.fc_width=48", "model.auxiliary_rpn_weight=1.0",
                "model.rpn_proposals=20"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-step checkpoint trained with model overrides (TRAINED_WITH) the config file does not have."""
    tmp = tmp_path_factory.mktemp("trained")
    config = tiny_config(tmp, tmp / "cache", train={"steps": 1})
    assert cli(["train", "--config", str(config), *TRAINED_WITH]) == 0
    return config, tmp / "run" / "last.pth"


def test_the_checkpoints_model_keys_win_and_a_note_names_them(trained, capsys):
    config, checkpoint = trained
    cfg = load_config(DetectionConfig, config, ["model.test_scale=96"])
    model, used, _ = load_detector(checkpoint, cfg, ["circle", "rectangle", "triangle"])
    assert used.model.roi_context == 1.5 and used.model.backbone_options["fc_width"] == 48
    assert model.regions.context == 1.5 and model.auxiliary_rpn is not None and used.model.rpn_proposals == 20
    assert used.model.test_scale == 96 and model.transform.min_size == (96,)  # a test-time key stays the config's
    out = capsys.readouterr().out
    assert f"note: {checkpoint} was trained with " in out
    assert "model.roi_context=1.5 (the config: 1.0)" in out and "'fc_width': 48} (the config: {'init': 'kaiming'})" in out
    assert "test_scale" not in out


def test_detect_test_without_the_overrides_scores_as_with_them(trained, tmp_path, capsys):
    config, checkpoint = trained
    assert cli(["test", "--config", str(config), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "plain"),
                "--metrics", "voc07", "--worst-images", "0"]) == 0
    assert "the checkpoint's values are used" in capsys.readouterr().out
    assert cli(["test", "--config", str(config), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "given"),
                "--metrics", "voc07", "--worst-images", "0", *TRAINED_WITH]) == 0
    assert "the checkpoint's values are used" not in capsys.readouterr().out
    plain = json.loads((tmp_path / "plain" / "detections.json").read_text())
    given = json.loads((tmp_path / "given" / "detections.json").read_text())
    assert plain and plain == given


def test_a_checkpoint_of_another_backbone_is_still_refused(trained, tmp_path):
    config, checkpoint = trained
    raw = yaml.safe_load(config.read_text())
    raw["model"]["backbone"] = "vgg13"
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(raw))
    assert cli(["test", "--config", str(other), "--checkpoint", str(checkpoint), "--out", str(tmp_path)]) == 2

