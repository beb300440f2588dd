"""Every backbone splits into trunk / head / classifier that share its weights and compose to its forward."""
import pytest
import torch

from backbones import BUILDERS, IMAGENET_MEAN, IMAGENET_STD, build_backbone

pytestmark = pytest.mark.usefixtures("torch_one_thread")

FULL_SIZE = {  # name -> (trunk channels, head features) at width 1.0, from the papers
    "vgg16": (512, 4096), "vgg19_bn": (512, 4096), "resnet18": (256, 512), "resnet34": (256, 512),
    "resnet50": (1024, 2048), "resnet101": (1024, 2048), "resnet152": (1024, 2048),
    "googlenet": (832, 1024), "googlenet_bn": (832, 1024),
}


@pytest.mark.parametrize("name", list(FULL_SIZE))
def test_full_size_parts_have_the_papers_stride_and_widths(name):
    with torch.device("meta"):
        parts = build_backbone(name).detection_parts()
    assert (parts.stride, parts.head_input_size, parts.input_size) == (16, 14, 224)
    assert (parts.out_channels, parts.num_features) == FULL_SIZE[name]
    assert (parts.trunk.stride, parts.trunk.out_channels) == (16, parts.out_channels)
    assert parts.classifier.in_features == parts.num_features and parts.classifier.out_features == 1000
    assert (parts.mean, parts.std) == (IMAGENET_MEAN, IMAGENET_STD)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_classifier_of_head_of_trunk_equals_the_forward_pass_at_224(name):
    torch.manual_seed(0)
    model = build_backbone(name, num_classes=10, width=0.25).eval()
    parts = model.detection_parts()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        features = parts.trunk(x)
        pooled = parts.head(features)
        composed = parts.classifier(pooled)
        direct = model(x)
        timm_style = model.forward_head(model.forward_features(x), pre_logits=True)
    assert features.shape == (2, parts.out_channels, 14, 14)  # stride 16, head_input_size 14
    assert pooled.shape == (2, parts.num_features)
    assert direct.std() > 0
    assert (composed - direct).abs().max().item() <= 1e-5
    assert torch.allclose(timm_style, pooled, atol=1e-6)


@pytest.mark.parametrize("name", ["vgg16_bn", "resnet50", "googlenet"])
def test_parts_share_the_models_storage(name):
    model = build_backbone(name, width=0.25)
    parts = model.detection_parts()
    model_storage = {p.data_ptr() for p in model.parameters()}
    part_params = [*parts.trunk.parameters(), *parts.head.parameters(), *parts.classifier.parameters()]
    assert {p.data_ptr() for p in part_params} <= model_storage
    # Every weight but the training-only auxiliary heads belongs to a part: nothing copied, nothing lost.
    aux = {p.data_ptr() for n, p in model.named_parameters() if n.startswith("aux")}
    assert {p.data_ptr() for p in part_params} == model_storage - aux


@pytest.mark.parametrize("name", [n for n in BUILDERS if not n.startswith("resnet")])
def test_roi_head_is_the_head_after_its_max_pool_on_shared_weights(name):
    """Fast R-CNN's RoI layer replaces pool5 (VGG) / pool4 (GoogLeNet): roi_head on the max-pooled
    14x14 map equals head on the 14x14 map, with the same parameters."""
    torch.manual_seed(0)
    parts = build_backbone(name, num_classes=10, width=0.25).eval().detection_parts()
    assert parts.roi_head_input_size == 7
    x = torch.randn(3, parts.out_channels, 14, 14)
    with torch.no_grad():
        via_head = parts.head(x)
        via_roi_head = parts.roi_head(parts.head[0](x))
    assert via_roi_head.shape == (3, parts.num_features)
    torch.testing.assert_close(via_roi_head, via_head, rtol=0, atol=0)
    head_params = {p.data_ptr() for p in parts.head.parameters()}
    assert {p.data_ptr() for p in parts.roi_head.parameters()} == head_params


def test_resnet_has_no_roi_head_its_conv5_needs_14x14():
    parts = build_backbone("resnet18", width=0.25).detection_parts()
    assert parts.roi_head is None and parts.roi_head_input_size is None
