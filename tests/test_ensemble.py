"""Ensembles (`detect test --checkpoint a --checkpoint b`): the members' class posteriors and boxes are
averaged over the same proposals, then thresholded and NMS'd once."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from detect.cli import main as cli
from detect.engine.detection_inference import load_detector, load_detectors
from detect.models.postprocess import detect_objects
from detect.utils.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def two_checkpoints(bccd_checkpoint, tmp_path_factory):
    """The tiny checkpoint and a copy whose classifier and box head were moved (another 'training run')."""
    checkpoint, config, images = bccd_checkpoint
    state = load_checkpoint(checkpoint)
    generator = torch.Generator().manual_seed(1)
    for key in ("classifier.weight", "classifier.bias", "localisation.fc.weight"):
        state["model"][key] = state["model"][key] + 0.5 * torch.randn(state["model"][key].shape, generator=generator)
    other = save_checkpoint(tmp_path_factory.mktemp("ensemble") / "other.pth", state)
    return checkpoint, other, config, images


def test_ensemble_averages_posteriors_and_boxes_before_nms(two_checkpoints):
    first, second, _, images = two_checkpoints
    a, cfg, classes = load_detector(first)
    b, _, _ = load_detector(second)
    ensemble, _, _ = load_detectors([first, second], cfg, classes)
    image = torch.from_numpy(np.asarray(Image.open(images[0]).convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    proposals = torch.tensor([[10, 20, 110, 140], [200, 100, 330, 260], [50, 300, 90, 340], [400, 50, 620, 400]],
                             dtype=torch.float32)
    with torch.no_grad():
        (sa, ba), = a.region_predictions([image], [proposals])
        (sb, bb), = b.region_predictions([image], [proposals])
        found = ensemble([image], [proposals])[0]
        alone = a([image], [proposals])[0]
    assert not torch.allclose(sa, sb, atol=1e-3) and not torch.allclose(ba, bb, atol=1e-2)
    expected = detect_objects((sa + sb) / 2, (ba + bb) / 2, tuple(image.shape[-2:]), ensemble.inference)
    torch.testing.assert_close(found["scores"], expected["scores"])
    torch.testing.assert_close(found["boxes"], expected["boxes"])
    assert found["scores"].shape != alone["scores"].shape or not torch.allclose(found["scores"], alone["scores"])


def test_detect_test_with_two_checkpoints(two_checkpoints, tmp_path, capsys):
    first, second, config, _ = two_checkpoints
    out = tmp_path / "test"
    assert cli(["test", "--config", str(config), "--checkpoint", str(first), "--checkpoint", str(second),
                "--out", str(out), "--metrics", "voc07"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint"] == [str(first), str(second)] and "mAP" in metrics["voc07"]
    state = load_checkpoint(second)
    state["classes"] = list(reversed(state["classes"]))
    save_checkpoint(tmp_path / "swapped.pth", state)
    assert cli(["test", "--config", str(config), "--checkpoint", str(first), "--checkpoint",
                str(tmp_path / "swapped.pth"), "--out", str(out)]) == 2
    assert "an ensemble averages the same classes" in capsys.readouterr().err
