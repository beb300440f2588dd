"""test.flip: each region scored on the image and on its mirror, the two averaged (detectron2's TTA flip)."""
import pytest
import torch

from detect.config import load_config
from detect.engine.detection_config import DetectionConfig
from detect.models.detector import ModelConfig, build_detector
from detect.models.exportable import ExportableDetector
from detect.models.postprocess import InferenceConfig, mirror_boxes

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CFG = ModelConfig(backbone="vgg11", width=0.0625, mode="fast", train_scales=[64], test_scale=64, max_size=128,
                  backbone_options={"init": "kaiming"})  # features that are not ~0, so the scores differ
PROPOSALS = torch.tensor([[8.0, 8.0, 28.0, 28.0], [30.0, 20.0, 60.0, 50.0], [0.0, 0.0, 20.0, 12.0]])


def detector(flip: bool):
    torch.manual_seed(0)
    model = build_detector(CFG, num_classes=2, inference=InferenceConfig(flip=flip)).eval()
    with torch.no_grad():  # scores that differ and boxes that move, so mirroring either is seen
        torch.nn.init.normal_(model.classifier.weight, std=1.0)
        model.localisation.fc.bias.copy_(torch.tensor([1.0, 0.5, 0.2, -0.3] * 2))
    return model


def test_mirror_boxes_is_torchvisions_flip_and_its_own_inverse():
    boxes = torch.tensor([[2.0, 3.0, 10.0, 9.0]])
    torch.testing.assert_close(mirror_boxes(boxes, 64), torch.tensor([[54.0, 3.0, 62.0, 9.0]]))
    torch.testing.assert_close(mirror_boxes(mirror_boxes(boxes, 64), 64), boxes)


def test_flip_averages_the_image_and_its_mirror():
    image = torch.rand(3, 48, 72)
    plain, flipped = detector(False), detector(True)
    with torch.no_grad():
        scores, boxes = plain.region_predictions([image], [PROPOSALS])[0]
        m_scores, m_boxes = plain.region_predictions([image.flip(-1)], [mirror_boxes(PROPOSALS, 72)])[0]
        both_scores, both_boxes = flipped.region_predictions([image], [PROPOSALS])[0]
    torch.testing.assert_close(both_scores, (scores + m_scores) / 2)
    torch.testing.assert_close(both_boxes, (boxes + mirror_boxes(m_boxes, 72)) / 2)
    assert not torch.allclose(both_scores, scores), "a net that is not mirror-symmetric scores the mirror otherwise"


def test_flip_makes_the_detections_mirror_equivariant():
    """With the flip, detecting on the mirrored image gives the mirrored detections: exact by construction,
    whatever the network; wrong if either the regions or the returned boxes were not mirrored."""
    image = torch.rand(3, 48, 72)
    model = detector(True)
    with torch.no_grad():
        scores, boxes = model.region_predictions([image], [PROPOSALS])[0]
        m_scores, m_boxes = model.region_predictions([image.flip(-1)], [mirror_boxes(PROPOSALS, 72)])[0]
    torch.testing.assert_close(m_scores, scores)
    torch.testing.assert_close(mirror_boxes(m_boxes, 72), boxes, rtol=0, atol=1e-4)


def test_exported_detector_flips_as_the_detector():
    image = torch.rand(3, 48, 72)
    model = detector(True)
    with torch.no_grad():
        expected = model.region_predictions([image], [PROPOSALS])[0]
        exported = ExportableDetector(model)(image, PROPOSALS)
    torch.testing.assert_close(exported, expected, rtol=1e-4, atol=1e-4)


def test_config_key_reaches_the_detector_and_is_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("test: {flip: true}\n")
    assert load_config(DetectionConfig, path).test.flip is True
    with pytest.raises(ValueError, match="flip must be true or false"):
        InferenceConfig(flip="yes").validate()
