"""The backbones are the papers' networks: parameter counts, FLOPs, topology, shortcut options, GoogLeNet's
Table 1, thin versions of the same topology, initialisation, and clear errors for bad names/options."""
import math

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from backbones import BUILDERS, BackboneError, build_backbone, count_flops, count_parameters
from backbones.googlenet import AuxClassifier, INCEPTION_CONFIGS
from backbones.resnet import ZeroPadShortcut

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def meta_build(name, **options):
    """Full-size architecture without the cost of initialising ~100M weights (counts need shapes only)."""
    with torch.device("meta"):
        return build_backbone(name, **options)


@pytest.mark.parametrize("name,options,expected", [
    ("vgg16", {}, 138_357_544),
    ("resnet101", {}, 44_549_160),
    ("googlenet_bn", {"aux_logits": False}, 6_624_904),
])
def test_parameter_counts_equal_the_papers_and_torchvision(name, options, expected):
    model = meta_build(name, **options)
    assert count_parameters(model) == expected
    with torch.device("meta"):
        reference = {"vgg16": tvm.vgg16, "resnet101": tvm.resnet101,
                     "googlenet_bn": lambda: tvm.googlenet(aux_logits=False, init_weights=True)}[name]()
    assert count_parameters(reference) == expected


def test_vgg_parameter_counts_match_table_2_of_the_paper():
    millions = {"vgg11": 133, "vgg11_lrn": 133, "vgg13": 133, "vgg16_c": 134, "vgg16": 138, "vgg19": 144}
    for name, expected in millions.items():
        assert round(count_parameters(meta_build(name)) / 1e6) == expected, name


@pytest.mark.parametrize("name,weights", [
    ("vgg11", tvm.VGG11_Weights), ("vgg16", tvm.VGG16_Weights), ("vgg19_bn", tvm.VGG19_BN_Weights),
    ("resnet18", tvm.ResNet18_Weights), ("resnet101", tvm.ResNet101_Weights), ("googlenet_bn", tvm.GoogLeNet_Weights),
])
def test_flop_count_agrees_with_torchvisions_published_cost(name, weights):
    # torchvision's "_ops" are GMACs per 224x224 image; FlopCounterMode counts a multiply-add as 2 FLOPs.
    published_gmacs = weights.DEFAULT.meta["_ops"]
    assert count_flops(meta_build(name)) / 2e9 == pytest.approx(published_gmacs, rel=5e-3)


def test_vgg_c_adds_1x1_convs_and_a_lrn_adds_one_lrn():
    c, d = meta_build("vgg16_c"), meta_build("vgg16")
    kernels_c = [m.kernel_size for m in c.features if isinstance(m, nn.Conv2d)]
    kernels_d = [m.kernel_size for m in d.features if isinstance(m, nn.Conv2d)]
    assert len(kernels_c) == len(kernels_d) == 13
    assert [i for i, k in enumerate(kernels_c) if k == (1, 1)] == [6, 9, 12]  # conv3_3, conv4_3, conv5_3
    assert all(k == (3, 3) for k in kernels_d)
    lrn = [m for m in meta_build("vgg11_lrn").features if isinstance(m, nn.LocalResponseNorm)]
    assert len(lrn) == 1 and (lrn[0].size, lrn[0].k, lrn[0].beta) == (5, 2.0, 0.75)
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in meta_build("vgg11").modules())


def test_thin_models_keep_the_topology():
    for name in BUILDERS:
        full, thin = meta_build(name), meta_build(name, width=0.25)
        layout = lambda model: [(type(m).__name__, getattr(m, "kernel_size", None), getattr(m, "stride", None))
                                for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.MaxPool2d))]
        assert layout(thin) == layout(full), name
        assert count_parameters(thin) < count_parameters(full) / 8, name
    vgg = meta_build("vgg16", width=0.25)
    assert vgg.features[0].out_channels == 16 and vgg.classifier[0].out_features == 1024
    assert meta_build("resnet50", width=1 / 64).layer1[0].conv1.out_channels == 1  # at least one channel


def test_vgg_fc_width_sets_fc6_and_fc7_and_leaves_the_trunk_alone():
    default, wide = meta_build("vgg11_bn", width=0.125), meta_build("vgg11_bn", width=0.125, fc_width=1024)
    assert default.classifier[0].out_features == 512 and default.num_features == 512
    assert (wide.classifier[0].in_features, wide.classifier[0].out_features) == (64 * 7 * 7, 1024)
    assert (wide.classifier[3].in_features, wide.classifier[3].out_features, wide.classifier[6].in_features) \
        == (1024, 1024, 1024)
    assert [p.shape for p in wide.features.parameters()] == [p.shape for p in default.features.parameters()]
    assert wide.detection_parts().num_features == 1024 and "fc 1024" in wide.arch
    assert meta_build("vgg16", fc_width=4096).torchvision_weights == "VGG16_Weights.DEFAULT"
    assert meta_build("vgg16", fc_width=1024).torchvision_weights is None  # torchvision's weights no longer fit


def projection_parameters(model):
    return sum(p.numel() for name, p in model.named_parameters() if ".downsample." in name)


def test_resnet_shortcut_options_a_b_c():
    a, b, c = (meta_build("resnet34", shortcut=s) for s in "ABC")
    blocks = lambda model: [blk for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for blk in layer]
    # B projects only where the shape changes (3 blocks in ResNet-34), C everywhere, A never (zero-padding).
    assert sum(isinstance(blk.downsample, nn.Sequential) for blk in blocks(b)) == 3
    assert all(isinstance(blk.downsample, nn.Sequential) for blk in blocks(c))
    assert sum(isinstance(blk.downsample, ZeroPadShortcut) for blk in blocks(a)) == 3
    assert not any(isinstance(blk.downsample, nn.Sequential) for blk in blocks(a))
    assert count_parameters(a) == count_parameters(b) - projection_parameters(b)
    assert count_parameters(c) > count_parameters(b)


def test_option_a_shortcut_is_subsampled_identity_with_zero_channels():
    torch.manual_seed(0)
    model = build_backbone("resnet34", shortcut="A", width=0.25).eval()
    block = model.layer2[0]  # 16 -> 32 channels, stride 2
    nn.init.zeros_(block.bn2.weight)
    nn.init.zeros_(block.bn2.bias)  # residual branch outputs exactly 0
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        y = block(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], torch.relu(x[:, :, ::2, ::2]))
    assert torch.count_nonzero(y[:, 16:]) == 0


def test_googlenet_follows_table_1_of_the_paper():
    model = meta_build("googlenet")
    for name, (c1, c3r, c3, c5r, c5, proj) in INCEPTION_CONFIGS.items():
        block = getattr(model, name)
        shapes = [tuple(block.branch1.conv.weight.shape), tuple(block.branch2[0].conv.weight.shape),
                  tuple(block.branch2[1].conv.weight.shape), tuple(block.branch3[0].conv.weight.shape),
                  tuple(block.branch3[1].conv.weight.shape), tuple(block.branch4[1].conv.weight.shape)]
        in_channels = shapes[0][1]
        assert shapes == [(c1, in_channels, 1, 1), (c3r, in_channels, 1, 1), (c3, c3r, 3, 3),
                          (c5r, in_channels, 1, 1), (c5, c5r, 5, 5), (proj, in_channels, 1, 1)], name
    assert [getattr(model, n).branch1.conv.in_channels for n in ("inception3a", "inception4a", "inception5a")] == \
        [192, 480, 832]
    assert isinstance(model.lrn1, nn.LocalResponseNorm) and isinstance(model.lrn2, nn.LocalResponseNorm)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.dropout.p == 0.4 and model.aux1.dropout.p == 0.7
    assert isinstance(model.aux1.pool, nn.AvgPool2d) and model.aux1.pool.kernel_size == 5 and model.aux1.pool.stride == 3
    assert (model.aux1.conv.conv.out_channels, model.aux1.fc1.out_features) == (128, 1024)
    assert (model.aux1.conv.conv.in_channels, model.aux2.conv.conv.in_channels) == (512, 528)  # on 4a and 4d


def test_googlenet_aux_heads_run_in_training_only():
    torch.manual_seed(0)
    model = build_backbone("googlenet", num_classes=7, width=0.25)
    assert isinstance(model.aux1, AuxClassifier)
    x = torch.rand(2, 3, 224, 224)
    model.train()
    logits, aux2, aux1 = model(x)
    assert logits.shape == aux1.shape == aux2.shape == (2, 7)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)
    no_aux = build_backbone("googlenet", width=0.25, aux_logits=False)
    assert no_aux.aux1 is None and isinstance(no_aux.train()(x[:1]), torch.Tensor)


def test_any_input_size_works_through_global_pooling():
    with torch.no_grad():
        for name in ("resnet18", "googlenet_bn", "vgg11"):
            model = build_backbone(name, width=0.125).eval()
            assert model(torch.rand(1, 3, 160, 288)).shape == (1, 1000), name


def test_vgg_initialisation_schemes():
    torch.manual_seed(0)
    paper = build_backbone("vgg11", width=0.5)
    conv = paper.features[3]
    assert conv.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.count_nonzero(conv.bias) == 0
    glorot = build_backbone("vgg11", width=0.5, init="glorot").features[3]
    fan_in, fan_out = conv.in_channels * 9, conv.out_channels * 9
    assert glorot.weight.std().item() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.05)
    kaiming = build_backbone("vgg11", width=0.5, init="kaiming").features[3]
    assert kaiming.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)


def test_bad_names_and_options_are_clear_errors():
    with pytest.raises(BackboneError, match=r"unknown backbone 'vgg17' \(did you mean 'vgg19'\?\); valid names: .*resnet101"):
        build_backbone("vgg17")
    with pytest.raises(BackboneError, match=r"vgg16: unknown option\(s\) shortcut; valid options: .*init"):
        build_backbone("vgg16", shortcut="A")
    with pytest.raises(BackboneError, match="unknown shortcut option 'D'"):
        meta_build("resnet50", shortcut="D")
    with pytest.raises(BackboneError, match="unknown init scheme 'xavier'"):
        meta_build("vgg11", init="xavier")
    with pytest.raises(BackboneError, match="width must be positive"):
        meta_build("resnet18", width=0)
    with pytest.raises(BackboneError, match="fc_width must be a positive number of channels, got 0"):
        meta_build("vgg16", fc_width=0)
