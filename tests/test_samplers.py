"""Training-region samplers: R-CNN's 32/96 per batch and Fast R-CNN's 64 per image, on hand-made boxes."""
import torch

from detect.models.samplers import (IGNORE, RegionSampler, SamplerConfig, assign_labels, fast_rcnn_sampler,
                                    rcnn_sampler)

GT = torch.tensor([[0.0, 0.0, 100.0, 100.0]])


def shifted(dx: float) -> torch.Tensor:
    """A 100x100 box shifted right by dx: IoU with GT = (100-dx)/(100+dx)."""
    return torch.tensor([[dx, 0.0, 100.0 + dx, 100.0]])


def test_labels_follow_the_fast_rcnn_iou_bands():
    # IoU: 1.0, 0.6 (dx=25), 0.333 (dx=50), 0.0526 (dx=90), 0 (far away)
    proposals = torch.cat([shifted(0), shifted(25), shifted(50), shifted(90), shifted(500)])
    labels, matched, ious = assign_labels(proposals, GT, torch.tensor([3]), fast_rcnn_sampler())
    assert labels.tolist() == [3, 3, 0, IGNORE, IGNORE]
    torch.testing.assert_close(ious[:3], torch.tensor([1.0, 0.6, 1 / 3]))
    assert torch.equal(matched, GT.expand(5, 4))


def test_rcnn_counts_every_low_overlap_as_background():
    proposals = torch.cat([shifted(0), shifted(50), shifted(90), shifted(500)])
    labels, _, _ = assign_labels(proposals, GT, torch.tensor([2]), rcnn_sampler())
    assert labels.tolist() == [2, 0, 0, 0]


def test_each_proposal_takes_the_class_of_its_best_overlapping_box():
    gt = torch.tensor([[0.0, 0.0, 100.0, 100.0], [200.0, 0.0, 300.0, 100.0]])
    proposals = torch.tensor([[190.0, 0.0, 290.0, 100.0], [5.0, 0.0, 105.0, 100.0]])
    labels, matched, _ = assign_labels(proposals, gt, torch.tensor([1, 2]), fast_rcnn_sampler())
    assert labels.tolist() == [2, 1]
    assert torch.equal(matched, gt[[1, 0]])


def test_an_image_without_objects_gives_background_regions():
    proposals = torch.cat([shifted(0), shifted(300)])
    labels, matched, ious = assign_labels(proposals, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64),
                                          fast_rcnn_sampler())
    assert labels.tolist() == [0, 0] and ious.tolist() == [0.0, 0.0] and matched.shape == (2, 4)
    out = RegionSampler(fast_rcnn_sampler())([proposals], [{"boxes": torch.zeros(0, 4),
                                                            "labels": torch.zeros(0, dtype=torch.int64)}])
    assert out[0].labels.tolist() == [0, 0]


def many(dxs) -> torch.Tensor:
    return torch.cat([shifted(dx) for dx in dxs])


def test_fast_rcnn_draws_64_per_image_with_a_quarter_foreground():
    torch.manual_seed(0)
    fg = many([1.0] * 40)  # IoU ~0.98
    bg = many([40.0] * 100)  # IoU ~0.43
    ignored = many([95.0] * 50)  # IoU ~0.03, below 0.1
    targets = [{"boxes": GT, "labels": torch.tensor([1])}] * 2
    out = RegionSampler(fast_rcnn_sampler())([torch.cat([fg, bg, ignored])] * 2, targets)
    for regions in out:
        assert len(regions.labels) == 64
        assert int((regions.labels > 0).sum()) == 16  # 25% of 64
        assert int((regions.labels == 0).sum()) == 48
        assert bool((regions.ious[regions.labels == 0] >= 0.1).all())


def test_ground_truth_is_added_and_can_fill_the_foreground():
    torch.manual_seed(0)
    out = RegionSampler(fast_rcnn_sampler())([many([40.0] * 10)], [{"boxes": GT, "labels": torch.tensor([5])}])
    # the only foreground region is the ground-truth box itself; background fills the rest
    assert out[0].labels.tolist().count(5) == 1
    assert torch.equal(out[0].boxes[out[0].labels == 5], GT)
    assert len(out[0].labels) == 11


def test_rcnn_draws_32_foreground_and_96_background_across_the_whole_batch():
    torch.manual_seed(0)
    rich = torch.cat([many([1.0] * 60), many([60.0] * 30)])  # image 1: many foreground
    poor = many([60.0] * 200)  # image 2: background only (plus its GT)
    targets = [{"boxes": GT, "labels": torch.tensor([1])}] * 2
    out = RegionSampler(rcnn_sampler())([rich, poor], targets)
    labels = torch.cat([o.labels for o in out])
    assert len(labels) == 128
    assert int((labels > 0).sum()) == 32 and int((labels == 0).sum()) == 96


def test_too_few_foreground_are_filled_with_background():
    torch.manual_seed(0)
    cfg = SamplerConfig(batch_size=10, fg_fraction=0.5, fg_iou=0.5, bg_iou_low=0.0, bg_iou_high=0.5)
    out = RegionSampler(cfg)([many([60.0] * 20)], [{"boxes": GT, "labels": torch.tensor([1])}])
    assert int((out[0].labels > 0).sum()) == 1 and int((out[0].labels == 0).sum()) == 9


def test_bad_sampler_settings_are_rejected():
    import pytest

    with pytest.raises(ValueError, match="bg_iou"):
        RegionSampler(SamplerConfig(bg_iou_low=0.6, bg_iou_high=0.5))
