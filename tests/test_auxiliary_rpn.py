"""model.auxiliary_rpn_weight: an RPN's losses train the trunk beside the head; at test it is not run, unless
model.rpn_proposals adds its top N proposals to the cached ones (training and test)."""
import pytest
import torch

from conftest import BCCD
from detect.data.spec import build_dataset
from detect.models.detector import ModelConfig, build_detector
from detect.models.exportable import ExportableDetector

pytestmark = pytest.mark.usefixtures("torch_one_thread")

OPTIONS = dict(backbone="vgg11_bn", width=0.125, backbone_options={"init": "kaiming", "dropout": 0.0},
               train_scales=[192], test_scale=192, max_size=320)


@pytest.fixture(scope="module")
def bccd_batch():
    """Two BCCD training images with their boxes, and proposals: each box shifted, plus random boxes."""
    if not BCCD.is_dir():
        pytest.skip("../shared/datasets/BCCD not present")
    dataset = build_dataset(f"voc:{BCCD}:train")
    generator = torch.Generator().manual_seed(0)
    images, targets, proposals = [], [], []
    for index in (0, 1):
        image, target = dataset[index]
        height, width = image.shape[-2:]
        shifted = target["boxes"] + torch.randn(target["boxes"].shape, generator=generator) * 6
        corners = torch.rand(40, 2, generator=generator) * torch.tensor([width - 80.0, height - 80.0])
        random = torch.cat([corners, corners + 20 + torch.rand(40, 2, generator=generator) * 60], dim=1)
        images.append(image)
        targets.append({"boxes": target["boxes"], "labels": target["labels"]})
        proposals.append(torch.cat([shifted, random]).clamp(min=0))
    return images, targets, proposals, len(dataset.classes)


def training_losses(weight: float, batch) -> tuple[torch.nn.Module, dict]:
    images, targets, proposals, num_classes = batch
    torch.manual_seed(0)
    detector = build_detector(ModelConfig(**OPTIONS, auxiliary_rpn_weight=weight), num_classes).train()
    torch.manual_seed(1)  # the same sampled RoIs and anchors for every weight
    return detector, detector(images, proposals, targets)


def test_auxiliary_rpn_adds_its_weighted_losses_and_trains_the_trunk_through_them(bccd_batch):
    _, plain = training_losses(0.0, bccd_batch)
    assert set(plain) == {"loss_classifier", "loss_box"}
    _, once = training_losses(1.0, bccd_batch)
    detector, twice = training_losses(2.0, bccd_batch)
    assert set(once) == {"loss_classifier", "loss_box", "loss_rpn_objectness", "loss_rpn_box"}
    assert torch.isclose(once["loss_classifier"], plain["loss_classifier"])  # the head's losses unchanged
    assert once["loss_rpn_objectness"].item() > 0.1 and once["loss_rpn_box"].item() > 0
    for name in ("loss_rpn_objectness", "loss_rpn_box"):
        assert torch.isclose(twice[name], 2 * once[name])
    (twice["loss_rpn_objectness"] + twice["loss_rpn_box"]).backward()
    trunk_grad = detector.regions.trunk[0].weight.grad
    assert trunk_grad is not None and trunk_grad.abs().sum() > 0  # the dense signal reaches the trunk
    fc6 = next(m for m in detector.regions.head.modules() if isinstance(m, torch.nn.Linear))
    assert fc6.weight.grad is None  # and only the trunk: the region head is not on its path


def test_auxiliary_rpn_objectness_loss_falls_on_real_images(bccd_batch):
    images, targets, proposals, num_classes = bccd_batch
    torch.manual_seed(0)
    detector = build_detector(ModelConfig(**OPTIONS, auxiliary_rpn_weight=1.0), num_classes).train()
    optimizer = torch.optim.SGD(detector.parameters(), lr=0.02, momentum=0.9)
    seen = []
    for _ in range(25):
        losses = detector(images, proposals, targets)
        seen.append(losses["loss_rpn_objectness"].item())
        optimizer.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(detector.parameters(), 10.0)  # as the recipe's train.grad_clip
        optimizer.step()
    assert sum(seen[-5:]) / 5 < 0.97 * sum(seen[:5]) / 5, seen  # chance: ln 2 = 0.693


def test_the_auxiliary_rpn_is_not_run_at_test_and_changes_no_detection(bccd_batch):
    images, _, proposals, num_classes = bccd_batch
    with_rpn, _ = training_losses(1.0, bccd_batch)
    plain = build_detector(ModelConfig(**OPTIONS), num_classes)
    kept = {k: v for k, v in with_rpn.state_dict().items() if not k.startswith("auxiliary_rpn.")}
    assert len(kept) < len(with_rpn.state_dict())
    plain.load_state_dict(kept)
    with_rpn.eval(), plain.eval()
    calls = []
    with_rpn.auxiliary_rpn.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        ours, reference = with_rpn(images, proposals), plain(images, proposals)
        exported = ExportableDetector(with_rpn)(images[0], proposals[0])
        exported_plain = ExportableDetector(plain)(images[0], proposals[0])
    assert calls == []
    for a, b in zip(ours, reference):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    assert all(torch.equal(a, b) for a, b in zip(exported, exported_plain))


def test_auxiliary_rpn_needs_fast_mode_and_a_non_negative_weight():
    with pytest.raises(ValueError, match="auxiliary_rpn_weight needs mode fast"):
        ModelConfig(mode="rcnn", auxiliary_rpn_weight=1.0).validate()
    with pytest.raises(ValueError, match="auxiliary_rpn_weight must be >= 0, got -1"):
        ModelConfig(auxiliary_rpn_weight=-1).validate()


def test_auxiliary_rpn_losses_stay_float32_under_bf16_autocast(bccd_batch):
    """bf16 anchors would round box corners (377 -> 376) before matching; the losses are computed in fp32."""
    from detect.models.auxiliary_rpn import auxiliary_rpn_losses, build_auxiliary_rpn
    images, targets, _, _ = bccd_batch
    torch.manual_seed(0)
    rpn = build_auxiliary_rpn(16).train()
    features = torch.randn(1, 16, 15, 20)
    batch = torch.zeros(1, 3, 240, 320)
    boxes = [{"boxes": targets[0]["boxes"] / 2 + 0.3}]  # corners off bf16's grid

    def losses(autocast: bool) -> dict:
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return auxiliary_rpn_losses(rpn, batch, [(240, 320)], features, boxes, 1.0)[1]

    plain, mixed = losses(False), losses(True)
    for name in plain:
        assert mixed[name].dtype == torch.float32
        assert torch.equal(mixed[name], plain[name]), name


def sampled_regions(rpn_proposals: int, batch) -> list:
    """The regions the sampler hands the head in one training step without any cached proposal."""
    images, targets, _, num_classes = batch
    torch.manual_seed(0)
    detector = build_detector(ModelConfig(**OPTIONS, auxiliary_rpn_weight=1.0, rpn_proposals=rpn_proposals),
                              num_classes).train()
    seen, sampler = [], detector.sampler

    def recording(proposals, targets, background_loss=None):
        seen.extend(sampler(proposals, targets, background_loss))
        return seen[-len(proposals):]
    detector.sampler = recording
    detector(images, [torch.zeros((0, 4)) for _ in images], targets)
    return seen


def test_rpn_proposals_join_the_candidates_the_head_trains_on(bccd_batch):
    alone = sampled_regions(0, bccd_batch)  # the ground-truth boxes are the only candidates
    assert all((s.labels > 0).all() and (s.ious > 0.999).all() for s in alone)
    joined = sampled_regions(200, bccd_batch)
    assert all((s.labels == 0).any() for s in joined)  # the RPN's boxes: background among them
    assert sum(len(s.boxes) for s in joined) > sum(len(s.boxes) for s in alone)
    boxes = torch.cat([s.boxes for s in joined])
    assert boxes.min() >= 0 and boxes[:, 2].max() <= 256 and boxes[:, 3].max() <= 192  # the network's pixels


def test_rpn_proposals_at_test_follow_the_cached_ones_in_the_images_pixels(bccd_batch):
    from dataclasses import replace

    from detect.models.ensemble import DetectorEnsemble
    images, _, proposals, num_classes = bccd_batch
    torch.manual_seed(0)
    detector = build_detector(ModelConfig(**OPTIONS, auxiliary_rpn_weight=1.0, rpn_proposals=50), num_classes).eval()
    extended = detector.with_rpn_proposals(images, proposals)
    for image, given, both in zip(images, proposals, extended):
        assert torch.equal(both[:len(given)], given)
        learned = both[len(given):]
        height, width = image.shape[-2:]  # 480 x 640; the network sees 192 x 256
        assert 0 < len(learned) <= 50 and learned.min() >= 0
        assert learned[:, 2].max() <= width and learned[:, 3].max() <= height and learned[:, 2].max() > 300
    assert [len(s) for s, _ in detector.region_predictions(images, proposals)] == [len(e) for e in extended]
    detector.inference = replace(detector.inference, flip=True)  # the mirror scores the same regions
    assert [len(s) for s, _ in detector.region_predictions(images, proposals)] == [len(e) for e in extended]
    torch.manual_seed(1)
    other = build_detector(ModelConfig(**OPTIONS, auxiliary_rpn_weight=1.0, rpn_proposals=50), num_classes).eval()
    ensemble = DetectorEnsemble([detector, other], detector.inference).eval()  # both score both RPNs' proposals
    with torch.no_grad():
        assert len(ensemble(images, proposals)) == len(images)


def test_rpn_proposals_need_the_rpn_and_a_whole_count():
    with pytest.raises(ValueError, match="rpn_proposals needs auxiliary_rpn_weight > 0"):
        ModelConfig(rpn_proposals=100).validate()
    with pytest.raises(ValueError, match="rpn_proposals must be a whole number >= 0, got -1"):
        ModelConfig(auxiliary_rpn_weight=1.0, rpn_proposals=-1).validate()


def test_exported_rpn_proposals_equal_the_detectors_at_every_image_size(bccd_batch):
    """The traced graph (`detect export`) keeps the image size an input: traced on one crop, it proposes
    the detector's boxes on crops of other sizes (torchvision's RPN alone would freeze the first size)."""
    images, _, _, num_classes = bccd_batch
    torch.manual_seed(0)
    detector = build_detector(ModelConfig(**OPTIONS, auxiliary_rpn_weight=1.0, rpn_proposals=200), num_classes).eval()
    torch.nn.init.normal_(detector.auxiliary_rpn.head.cls_logits.weight, std=1.0)  # objectness that varies a lot

    class Regions(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.exportable = ExportableDetector(detector)

        def forward(self, image, proposals):
            return self.exportable.with_rpn_proposals(image, proposals)

    crops = [images[0], images[1][:, :400, :520], images[0][:, 37:, 11:333]]
    given = torch.tensor([[10.0, 20.0, 90.0, 120.0]])
    with torch.no_grad():
        traced = torch.jit.trace(Regions(), (crops[1], given), check_trace=False)
        for crop in crops:
            expected = detector.with_rpn_proposals([crop], [given])[0]
            assert len(expected) > 50  # the given box and the RPN's after NMS 0.7
            for found in (Regions()(crop, given), traced(crop, given)):
                assert found.shape == expected.shape
                torch.testing.assert_close(found, expected, rtol=0, atol=1e-3)
