"""The detector's loss terms: the box loss's form and what it is averaged over."""
import torch

from detect.models.detector import ModelConfig, build_detector
from detect.models.localisation_head import box_loss
from detect.models.samplers import SampledRegions


def test_euclidean_and_smooth_l1_agree_on_small_errors_and_differ_on_large():
    target = torch.zeros(2, 4)
    small = torch.full((2, 4), 0.1)
    assert torch.isclose(box_loss(small, target, "euclidean"), box_loss(small, target, "smooth_l1"))
    large = torch.full((2, 4), 3.0)
    assert box_loss(large, target, "euclidean").item() == 0.5 * 4 * 9  # 1/2 ||d||^2
    assert box_loss(large, target, "smooth_l1").item() == 4 * 2.5  # |d| - 1/2 per coordinate


def sampled(num_fg: int, num_bg: int) -> SampledRegions:
    boxes = torch.tensor([[10.0, 10.0, 50.0, 50.0]]).repeat(num_fg + num_bg, 1)
    labels = torch.tensor([1] * num_fg + [0] * num_bg)
    gt = torch.tensor([[12.0, 8.0, 56.0, 50.0]]).repeat(num_fg + num_bg, 1)
    return SampledRegions(boxes, labels, gt, torch.full((num_fg + num_bg,), 0.8))


def test_sampled_average_divides_the_box_loss_by_every_sampled_region():
    regions = [sampled(4, 12)]
    logits, deltas = torch.zeros(16, 3), torch.zeros(16, 8)
    losses = {}
    for average in ("regressed", "sampled"):
        model = build_detector(ModelConfig(backbone="vgg11", width=0.0625, box_loss_average=average), num_classes=2)
        losses[average] = model.losses(logits, deltas, regions)["loss_box"]
    assert torch.isclose(losses["sampled"], losses["regressed"] * 4 / 16)
