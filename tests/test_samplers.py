"""Training-region samplers: R-CNN's 32/96 per batch and Fast R-CNN's 64 per image, on hand-made boxes."""
import torch

from torchvision.ops import box_iou

from detect.models.samplers import (IGNORE, RegionSampler, SamplerConfig, assign_labels, fast_rcnn_sampler,
                                    jitter_ground_truth, rcnn_sampler)

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


def test_jittered_ground_truth_spans_foreground_and_near_miss_background():
    torch.manual_seed(0)
    gt = torch.tensor([[0.0, 0.0, 100.0, 100.0], [300.0, 50.0, 340.0, 130.0]])
    copies = jitter_ground_truth(gt, 500)
    assert copies.shape == (1000, 4)
    ious = box_iou(copies.reshape(2, 500, 4)[0], gt[:1])[:, 0]
    ious_second = box_iou(copies.reshape(2, 500, 4)[1], gt[1:])[:, 0]
    for overlap in (ious, ious_second):  # each copy stays near its own box, at every overlap from ~0.3 up
        assert 0.2 < float(overlap.min()) < 0.45 and float(overlap.max()) > 0.95
        assert 0.7 < float((overlap >= 0.5).float().mean()) < 0.95  # mostly foreground, some near misses
        assert float((overlap >= 0.8).float().mean()) > 0.2  # and many tight ones
    assert jitter_ground_truth(torch.zeros(0, 4), 8).shape == (0, 4) and jitter_ground_truth(gt, 0).shape == (0, 4)


def test_gt_jitter_adds_foreground_where_the_proposals_have_none():
    cfg = SamplerConfig(batch_size=64, fg_fraction=0.25, bg_iou_low=0.0, bg_iou_high=0.5)
    far = many([500.0] * 100)  # background only
    targets = [{"boxes": GT, "labels": torch.tensor([2])}]
    torch.manual_seed(0)
    plain = RegionSampler(cfg)([far], targets)[0]
    torch.manual_seed(0)
    jittered = RegionSampler(SamplerConfig(**{**cfg.__dict__, "gt_jitter": 16}))([far], targets)[0]
    assert int((plain.labels == 2).sum()) == 1  # the ground-truth box alone
    assert 4 <= int((jittered.labels == 2).sum()) <= 16
    assert bool((jittered.ious[jittered.labels == 2] >= 0.5).all())
    near_misses = (jittered.labels == 0) & (jittered.ious > 0.2)  # background just off the object
    assert int(near_misses.sum()) >= 1


def test_bad_sampler_settings_are_rejected():
    import pytest

    with pytest.raises(ValueError, match="bg_iou"):
        RegionSampler(SamplerConfig(bg_iou_low=0.6, bg_iou_high=0.5))
    with pytest.raises(ValueError, match="gt_jitter"):
        RegionSampler(SamplerConfig(gt_jitter=-1))


def hard_mining_case():
    """One image: 16 foreground boxes and 300 background ones, the background's x1 = its index."""
    fg = many([1.0] * 16)
    bg = torch.tensor([[200.0 + i, 0.0, 260.0 + i, 50.0] for i in range(300)])
    return torch.cat([fg, bg]), [{"boxes": GT, "labels": torch.tensor([1])}]


def test_hard_negative_mining_keeps_the_worst_classified_background_of_its_pool():
    torch.manual_seed(0)
    proposals, targets = hard_mining_case()
    cfg = SamplerConfig(batch_size=64, fg_fraction=0.25, bg_iou_low=0.0, hard_negative_pool=1000)
    scored = []

    def background_loss(boxes):  # "hardness" = x1: the mined background must be the right-most boxes
        scored.append(len(boxes[0]))
        return [b[:, 0] for b in boxes]

    out = RegionSampler(cfg)([proposals], targets, background_loss)[0]
    assert scored == [300]  # the pool (1000) takes every background candidate there is
    background = out.boxes[out.labels == 0]
    assert len(background) == 48 and (out.labels > 0).sum() == 16  # the same 16 / 48 split as a random draw
    assert sorted(background[:, 0].tolist()) == [200.0 + i for i in range(252, 300)]


def test_hard_negative_mining_draws_a_random_pool_and_is_off_without_a_scorer():
    torch.manual_seed(0)
    proposals, targets = hard_mining_case()
    cfg = SamplerConfig(batch_size=64, fg_fraction=0.25, bg_iou_low=0.0, hard_negative_pool=100)
    out = RegionSampler(cfg)([proposals], targets, lambda boxes: [b[:, 0] for b in boxes])[0]
    background = out.boxes[out.labels == 0][:, 0]
    assert len(background) == 48 and background.min() > 200.0  # the hardest 48 of a pool of 100, not of all 300
    random_draw = RegionSampler(cfg)([proposals], targets)[0]  # no scorer (R-CNN mode, say): a plain random draw
    assert (random_draw.labels == 0).sum() == 48


def test_hard_negative_pool_is_refused_when_it_cannot_apply():
    for bad in (-1, 1.5, True):
        try:
            SamplerConfig(hard_negative_pool=bad).validate()
        except ValueError as err:
            assert "hard_negative_pool" in str(err)
        else:
            raise AssertionError(f"hard_negative_pool={bad!r} accepted")
    try:
        SamplerConfig(hard_negative_pool=128, per_image=False).validate()
    except ValueError as err:
        assert "per_image" in str(err)
    else:
        raise AssertionError("hard negatives across the batch accepted")


def test_hard_negative_jitter_surrounds_the_hardest_mined_boxes_with_background_copies():
    torch.manual_seed(0)
    proposals, targets = hard_mining_case()
    cfg = SamplerConfig(batch_size=64, fg_fraction=0.25, bg_iou_low=0.0, hard_negative_pool=1000,
                        hard_negative_jitter=3)
    out = RegionSampler(cfg)([proposals], targets, lambda boxes: [b[:, 0] for b in boxes])[0]
    background = out.boxes[out.labels == 0]
    assert len(background) == 48 and (out.labels > 0).sum() == 16  # the split is unchanged
    seeds = background[:12]  # the hardest quarter of the 48 mined: the right-most 12 proposals
    assert sorted(seeds[:, 0].tolist()) == [200.0 + i for i in range(288, 300)]
    copies = background[12:]
    assert not any((copies == row).all(dim=1).any() for row in proposals), "the other 36 are new boxes"
    assert (box_iou(copies, seeds).max(dim=1).values > 0.2).all(), "each copy lies near a seed"
    assert (out.ious[out.labels == 0] < 0.5).all()


def test_hard_negative_jitter_needs_the_pool():
    import pytest

    with pytest.raises(ValueError, match="hard_negative_jitter needs hard_negative_pool"):
        SamplerConfig(hard_negative_jitter=3).validate()
    with pytest.raises(ValueError, match="hard_negative_jitter must be"):
        SamplerConfig(hard_negative_pool=10, hard_negative_jitter=-1).validate()
