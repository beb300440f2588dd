"""The MultiBox network on each classic backbone, and the mapping of its outputs to image boxes."""
import pytest
import torch

from detect.errors import UserError
from detect.proposals.multibox import MultiBoxNet, boxes_to_pixels

PRIORS = torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.2, 0.9, 0.8], [0.0, 0.0, 1.0, 1.0]])

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("backbone", ["vgg16", "resnet101", "googlenet", "googlenet_bn"])
def test_untrained_head_predicts_the_priors_on_every_backbone(backbone):
    torch.manual_seed(0)
    model = MultiBoxNet(backbone, PRIORS, width=0.0625, input_size=64).eval()
    with torch.no_grad():
        boxes, logits = model(torch.rand(2, 3, 64, 64))
    assert boxes.shape == (2, 3, 4) and logits.shape == (2, 3)
    assert torch.equal(boxes, PRIORS.expand(2, 3, 4))  # the box FC starts at zero
    model.init_confidence(0.25)
    with torch.no_grad():
        _, logits = model(torch.rand(1, 3, 64, 64))
    assert torch.allclose(logits.sigmoid(), torch.full((1, 3), 0.25))


def test_unknown_backbone_is_a_user_error():
    with pytest.raises(UserError, match="unknown backbone 'googlenett'"):
        MultiBoxNet("googlenett", PRIORS)


def test_boxes_map_to_pixels_reordered_and_clipped():
    boxes = torch.tensor([[0.6, 0.1, 0.2, 0.5],     # x1 > x2: corners swapped back
                          [-0.1, 0.0, 1.2, 0.5],    # beyond the image: clipped
                          [0.3, 0.3, 0.3, 0.9]])    # zero width: dropped
    scores = torch.tensor([0.2, 0.9, 0.5])
    out, out_scores = boxes_to_pixels(boxes, scores, width=100, height=200)
    assert torch.allclose(out, torch.tensor([[0.0, 0.0, 100.0, 100.0], [20.0, 20.0, 60.0, 100.0]]))
    assert out_scores.tolist() == pytest.approx([0.9, 0.2])


def test_top_k_and_nms_keep_the_best_distinct_boxes():
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.49], [0.5, 0.5, 1.0, 1.0], [0.2, 0.2, 0.3, 0.3]])
    scores = torch.tensor([0.8, 0.9, 0.3, 0.5])
    out, out_scores = boxes_to_pixels(boxes, scores, 10, 100, top_k=2, nms_iou=0.7)
    assert out_scores.tolist() == pytest.approx([0.9, 0.5])  # box 0 overlaps box 1 by IoU 0.98
    out, _ = boxes_to_pixels(boxes, scores, 10, 100, top_k=3)
    assert len(out) == 3
