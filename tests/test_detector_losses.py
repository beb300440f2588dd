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


def test_hard_negative_mining_scores_candidates_without_moving_batch_norm_statistics():
    """A training step with mined background: the losses are finite, and the scoring pass over the candidates
    leaves the head's batch-norm running statistics as one ordinary training pass does (thin ResNet: conv5 has BN)."""
    from detect.models.samplers import SamplerConfig

    torch.manual_seed(0)
    images = [torch.rand(3, 96, 128) for _ in range(2)]
    proposals = [torch.tensor([[x, 10.0, x + 40.0, 60.0] for x in range(0, 80, 4)]) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[20.0, 10.0, 60.0, 60.0]]), "labels": torch.tensor([1])}] * 2
    counts = {}
    for pool in (0, 64):
        sampler = SamplerConfig(batch_size=8, fg_fraction=0.25, bg_iou_low=0.0, hard_negative_pool=pool)
        model = build_detector(ModelConfig(backbone="resnet101", width=0.0625, train_scales=[96], test_scale=96,
                                           max_size=160, sampler=sampler), num_classes=2).train()
        losses = model(images, proposals, targets)
        assert all(torch.isfinite(v) for v in losses.values())
        counts[pool] = [int(m.num_batches_tracked) for m in model.regions.head.modules()
                        if isinstance(m, torch.nn.BatchNorm2d)]
    assert counts[64] == counts[0] and set(counts[0]) == {1}


def test_smooth_l1_beta_sets_where_the_loss_turns_linear():
    target = torch.zeros(1, 4)
    error = torch.full((1, 4), 0.5)
    assert box_loss(error, target, "smooth_l1", beta=1.0).item() == 4 * 0.5 * 0.25  # quadratic below beta 1
    torchvision_like = box_loss(error, target, "smooth_l1", beta=1 / 9).item()  # linear above beta 1/9
    assert abs(torchvision_like - 4 * (0.5 - 0.5 / 9)) < 1e-6
    try:
        ModelConfig(box_loss="smooth_l1", box_loss_beta=0.0).validate()
    except ValueError as err:
        assert "box_loss_beta" in str(err)
    else:
        raise AssertionError("box_loss_beta 0 accepted")
