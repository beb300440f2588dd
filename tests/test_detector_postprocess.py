"""Test-time postprocessing: soft-max scores -> per-class NMS -> score threshold -> top-k, and the region warp."""

import pytest
import torch

from detect.models.box_coder import BoxCoder
from detect.models.postprocess import InferenceConfig, decode_class_boxes, detect_objects
from detect.models.region_features import WarpedRegions, with_context

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def scores_for(rows):
    """Soft-max-like score rows [R, C+1] from per-class foreground scores (background takes the rest)."""
    fg = torch.tensor(rows, dtype=torch.float32)
    return torch.cat([1 - fg.sum(1, keepdim=True), fg], dim=1)


def test_nms_is_per_class():
    box = torch.tensor([10.0, 10.0, 50.0, 50.0])
    shifted = box + torch.tensor([2.0, 0.0, 2.0, 0.0])  # IoU 0.9 with box
    boxes = torch.stack([box, shifted])[:, None, :].expand(2, 2, 4)
    out = detect_objects(scores_for([[0.6, 0.1], [0.1, 0.5]]), boxes, (100, 100), InferenceConfig(score_threshold=0.3))
    # class 1 keeps region 0, class 2 keeps region 1: overlapping boxes of different classes both survive
    assert sorted(zip(out["labels"].tolist(), out["scores"].tolist())) == [(1, pytest.approx(0.6)), (2, pytest.approx(0.5))]


def test_overlapping_boxes_of_one_class_keep_only_the_best():
    boxes = torch.tensor([[10.0, 10.0, 50.0, 50.0], [12.0, 10.0, 52.0, 50.0], [60.0, 60.0, 90.0, 90.0]])[:, None, :]
    out = detect_objects(scores_for([[0.7], [0.9], [0.4]]), boxes, (100, 100), InferenceConfig(nms_iou=0.3))
    assert out["scores"].tolist() == pytest.approx([0.9, 0.4])
    assert torch.equal(out["boxes"][0], boxes[1, 0])


def test_score_threshold_and_top_k():
    boxes = torch.tensor([[i * 10.0, 0.0, i * 10.0 + 8.0, 8.0] for i in range(9)])[:, None, :]
    scores = scores_for([[0.01 + 0.1 * i] for i in range(9)])
    out = detect_objects(scores, boxes, (100, 100), InferenceConfig(score_threshold=0.15, max_detections=3))
    assert out["scores"].tolist() == pytest.approx([0.81, 0.71, 0.61])
    assert out["labels"].tolist() == [1, 1, 1]


def test_boxes_are_clipped_to_the_image():
    boxes = torch.tensor([[-20.0, -5.0, 130.0, 40.0]])[:, None, :]
    out = detect_objects(scores_for([[0.9]]), boxes, (50, 100), InferenceConfig())
    assert out["boxes"].tolist() == [[0.0, 0.0, 100.0, 40.0]]


def test_box_voting_averages_the_suppressed_boxes_of_the_same_class_by_score():
    boxes = torch.tensor([[10.0, 10.0, 50.0, 50.0], [14.0, 10.0, 54.0, 50.0], [60.0, 60.0, 90.0, 90.0],
                          [11.0, 10.0, 51.0, 50.0]])
    boxes = torch.stack([boxes, boxes], dim=1)  # [R, 2 classes, 4]
    scores = scores_for([[0.6, 0.0], [0.2, 0.0], [0.5, 0.0], [0.0, 0.9]])  # region 3 is class 2's
    out = detect_objects(scores, boxes, (100, 100), InferenceConfig(nms_iou=0.3, box_voting_iou=0.8))
    by_score = {round(s, 2): (label, box) for s, label, box in zip(out["scores"].tolist(), out["labels"].tolist(),
                                                                   out["boxes"].tolist())}
    assert by_score[0.6] == (1, pytest.approx([11.0, 10.0, 51.0, 50.0]))  # (0.6 * 10 + 0.2 * 14) / 0.8; class 2 votes not
    assert by_score[0.5] == (1, [60.0, 60.0, 90.0, 90.0])  # alone: stays put
    assert by_score[0.9] == (2, [11.0, 10.0, 51.0, 50.0])  # class 1's boxes do not vote for class 2
    plain = detect_objects(scores, boxes, (100, 100), InferenceConfig(nms_iou=0.3))
    assert torch.equal(plain["boxes"][plain["scores"] == 0.6][0], boxes[0, 0]), "without voting the kept box is its own"


def test_box_voting_iou_must_be_an_overlap():
    with pytest.raises(ValueError, match="box_voting_iou"):
        InferenceConfig(box_voting_iou=1.5).validate()


def test_single_class_regression_shares_one_box_across_classes():
    deltas = torch.tensor([[1.0, 0.0, 0.0, 0.0]])  # SCR: 4 outputs
    boxes = decode_class_boxes(BoxCoder(), deltas, torch.tensor([[0.0, 0.0, 10.0, 10.0]]), num_classes=3)
    assert boxes.shape == (1, 3, 4)
    assert torch.equal(boxes[0, 0], boxes[0, 2]) and boxes[0, 0].tolist() == [1.0, 0.0, 11.0, 10.0]


def test_context_padding_leaves_16_pixels_of_surround_at_224():
    grown = with_context(torch.tensor([[100.0, 50.0, 292.0, 242.0]]), warp_size=224, context=16)
    # the 192 px box becomes 224 px: 16 px each side at a 1:1 warp, R-CNN's padding
    assert grown.tolist() == [[84.0, 34.0, 308.0, 258.0]]


def test_warping_a_whole_image_box_without_context_reproduces_the_backbone():
    """rcnn mode at the input size: the region's features equal the backbone's own on the image."""
    import backbones

    torch.manual_seed(0)
    net = backbones.build_backbone("vgg11", width=0.0625, init="kaiming").eval()
    parts = net.detection_parts()
    regions = WarpedRegions(parts.trunk, parts.head, parts.num_features, warp_size=64, context=0)
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = regions(image, [torch.tensor([[0.0, 0.0, 64.0, 64.0]])])
        torch.testing.assert_close(parts.classifier(features), net(image), rtol=1e-4, atol=1e-5)


def test_warped_crops_are_streamed_in_chunks():
    import backbones

    net = backbones.build_backbone("vgg11", width=0.0625).eval()
    parts = net.detection_parts()
    seen = []
    parts.trunk.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    regions = WarpedRegions(parts.trunk, parts.head, parts.num_features, warp_size=32, context=2, chunk_size=4)
    boxes = torch.tensor([[0.0, 0.0, 20.0 + i, 30.0] for i in range(10)])
    with torch.no_grad():
        features = regions(torch.randn(1, 3, 48, 48), [boxes])
    assert features.shape == (10, parts.num_features)
    assert seen == [4, 4, 2], "never more than chunk_size crops at once"


def test_training_chunks_recomputed_in_backward_equal_kept_ones():
    """R-CNN training with several chunks: the same loss, gradients and batch-norm statistics as keeping
    every chunk's activations, with each chunk's trunk run twice (once more in backward)."""
    import copy

    import backbones

    torch.manual_seed(0)
    net = backbones.build_backbone("resnet18", width=0.125).train()
    parts = net.detection_parts()
    boxes = [torch.tensor([[0.0, 0.0, 20.0 + i, 30.0] for i in range(6)]),
             torch.tensor([[4.0, 4.0, 40.0, 40.0], [8.0, 0.0, 30.0, 44.0]])]
    images = torch.randn(2, 3, 48, 48)
    results = []
    for recompute in (False, True):
        trunk, head = copy.deepcopy(parts.trunk), copy.deepcopy(parts.head)
        passes = []
        trunk.register_forward_hook(lambda module, inputs, output: passes.append(inputs[0].shape[0]))
        regions = WarpedRegions(trunk, head, parts.num_features, warp_size=64, context=2, chunk_size=3,
                                recompute=recompute)
        torch.manual_seed(1)
        loss = regions(images, boxes).square().mean()
        loss.backward()
        stats = {k: v.clone() for k, v in regions.state_dict().items() if "running" in k or "num_batches" in k}
        grads = {k: p.grad.clone() for k, p in regions.named_parameters()}
        results.append((loss.detach(), grads, stats, passes))
    (loss0, grads0, stats0, passes0), (loss1, grads1, stats1, passes1) = results
    assert passes0 == [3, 3, 2] and sorted(passes1) == [2, 2, 3, 3, 3, 3], "each chunk recomputed once"
    torch.testing.assert_close(loss1, loss0)
    assert stats0 and all(torch.equal(stats1[k], stats0[k]) for k in stats0), "statistics updated once"
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-4, atol=1e-6)


def test_test_time_rois_pooled_on_every_core_equal_one_core():
    import backbones
    from detect.models.region_features import PooledRegions

    parts = backbones.build_backbone("vgg11", width=0.0625).eval().detection_parts()
    regions = PooledRegions(parts.trunk, parts.head, parts.num_features, pool="align")
    features = torch.randn(1, parts.out_channels, 12, 16)
    rois = torch.cat([torch.zeros(50, 1), torch.rand(50, 2) * 100, torch.rand(50, 2) * 100 + 110], dim=1)
    with torch.no_grad():
        one_core = regions._pool(features, rois)  # torch_one_thread: the single-threaded path
        torch.set_num_threads(2)
        two_cores = regions._pool(features, rois)
    assert torch.equal(one_core, two_cores)


def test_iterative_refinement_rescores_the_regressed_boxes():
    from detect.models.detector import ModelConfig, build_detector

    cfg = ModelConfig(backbone="vgg11", width=0.0625, mode="fast", train_scales=[64], test_scale=64, max_size=128)
    model = build_detector(cfg, num_classes=2, inference=InferenceConfig(refine_iterations=1, score_threshold=0.0)).eval()
    torch.nn.init.zeros_(model.localisation.fc.weight)
    with torch.no_grad():
        model.localisation.fc.bias.copy_(torch.tensor([1.0, 0, 0, 0] * 2))  # every box moves right by 0.1 width
    proposals = [torch.tensor([[8.0, 8.0, 28.0, 28.0], [50.0, 0.0, 64.0, 10.0]])]
    logits = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    refined = model.refine(logits, model.localisation(torch.zeros(2, 256)), proposals, [(64, 64)])
    torch.testing.assert_close(refined[0], torch.tensor([[10.0, 8.0, 30.0, 28.0], [51.4, 0.0, 64.0, 10.0]]))  # clipped
    seen = []
    model.regions.register_forward_hook(lambda module, inputs, output: seen.append(inputs[1][0].clone()))
    with torch.no_grad():
        model([torch.rand(3, 64, 64)], proposals)
    assert len(seen) == 2, "scored once on the proposals, once more on the refined boxes"
    torch.testing.assert_close(seen[1], refined[0])


def test_pooled_refinement_keeps_every_iterations_regions_for_nms():
    from detect.models.detector import ModelConfig, build_detector
    from detect.models.exportable import ExportableDetector

    cfg = ModelConfig(backbone="vgg11", width=0.0625, mode="fast", train_scales=[64], test_scale=64, max_size=128)
    proposals = [torch.tensor([[8.0, 8.0, 28.0, 28.0], [30.0, 20.0, 60.0, 50.0], [0.0, 0.0, 20.0, 12.0]])]
    image = torch.rand(3, 64, 64)
    outputs = {}
    for pool in (False, True):
        torch.manual_seed(0)
        model = build_detector(cfg, num_classes=2, inference=InferenceConfig(refine_iterations=2, refine_pool=pool)).eval()
        with torch.no_grad():
            model.localisation.fc.bias.copy_(torch.tensor([1.0, 0.5, 0, 0] * 2))
            outputs[pool] = model.region_predictions([image], proposals)[0]
            exported = ExportableDetector(model)(image, proposals[0])
        torch.testing.assert_close(exported, outputs[pool], rtol=1e-4, atol=1e-4)
    (last_scores, last_boxes), (pooled_scores, pooled_boxes) = outputs[False], outputs[True]
    assert pooled_scores.shape == (9, 3) and pooled_boxes.shape == (9, 2, 4), "3 regions x (proposals + 2 refinements)"
    torch.testing.assert_close(pooled_scores[6:], last_scores)  # the last iteration comes last
    torch.testing.assert_close(pooled_boxes[6:], last_boxes)
    assert not torch.allclose(pooled_boxes[:3], last_boxes), "the proposals' own boxes are among the candidates"
