"""VGG's dense (fully-convolutional) evaluation and its pre-initialisation from a trained configuration A."""
import pytest
import torch

from backbones import VGG, BackboneError, build_backbone, init_from_vgg_a

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("name", ["vgg16", "vgg16_bn", "vgg16_c", "vgg11_lrn"])
def test_dense_evaluation_on_224_equals_the_fc_forward(name):
    torch.manual_seed(0)
    model = build_backbone(name, width=0.25, init="kaiming").eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        score_map = model.fully_convolutional()(x)
        fc = model(x)
    assert score_map.shape == (2, 1000, 1, 1)
    assert fc.std() > 1e-3
    assert (score_map.mean(dim=(2, 3)) - fc).abs().max().item() <= 1e-4


def test_dense_evaluation_takes_any_size_and_shares_the_fc_weights():
    torch.manual_seed(0)
    model = build_backbone("vgg16", num_classes=5, width=0.125).eval()
    dense = model.fully_convolutional()
    assert [p.data_ptr() for p in dense.parameters()] == [p.data_ptr() for p in model.parameters()]
    with torch.no_grad():
        score_map = dense(torch.rand(1, 3, 288, 384))
        assert score_map.shape == (1, 5, 3, 6)  # (288/32 - 6, 384/32 - 6)
        assert model.dense_logits(torch.rand(1, 3, 288, 384)).shape == (1, 5)
    with pytest.raises(ValueError, match="at least 224 px"):
        dense(torch.rand(1, 3, 200, 300))


def conv_layer_names(indices):
    return {f"features.{i}.{p}" for i in indices for p in ("weight", "bias")}


def test_deeper_vgg_is_preinitialised_from_a_trained_a():
    torch.manual_seed(0)
    a, d = VGG("A", width=0.25), VGG("D", width=0.25)
    before = {k: v.clone() for k, v in d.state_dict().items()}
    copied = init_from_vgg_a(d, a)
    # A's conv1_1, conv2_1, conv3_1, conv3_2 sit at features 0, 3, 6, 8; in D at 0, 5, 10, 12.
    pairs = {0: 0, 3: 5, 6: 10, 8: 12}
    fc = {f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")}
    assert set(copied) == conv_layer_names(pairs.values()) | fc
    a_state, d_state = a.state_dict(), d.state_dict()
    for src, dst in pairs.items():
        assert torch.equal(d_state[f"features.{dst}.weight"], a_state[f"features.{src}.weight"])
    for name in fc:
        assert torch.equal(d_state[name], a_state[name])
    for name, value in d_state.items():
        if name not in copied:
            assert torch.equal(value, before[name]), f"{name} should keep its random init"


def test_preinitialisation_from_a_state_dict_with_batch_norm():
    torch.manual_seed(0)
    a, e = VGG("A", width=0.25, batch_norm=True), VGG("E", width=0.25, batch_norm=True)
    for module in a.modules():  # BN statistics that differ from the init, so copying them is visible
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
    copied = init_from_vgg_a(e, a.state_dict())
    # E: conv1_1 0, conv2_1 7, conv3_1 14, conv3_2 17 (conv, BN, ReLU per layer); A: 0, 4, 8, 11.
    for src, dst in {0: 0, 4: 7, 8: 14, 11: 17}.items():
        for suffix in ("weight", "running_mean"):
            assert torch.equal(e.state_dict()[f"features.{dst + 1}.{suffix}"], a.state_dict()[f"features.{src + 1}.{suffix}"])
        assert f"features.{dst}.weight" in copied


def test_preinitialisation_rejects_what_does_not_fit():
    deep = VGG("D", width=0.25)
    with pytest.raises(BackboneError, match="copies from configuration A"):
        init_from_vgg_a(deep, VGG("B", width=0.25))
    with pytest.raises(BackboneError, match="does not fit"):
        init_from_vgg_a(deep, VGG("A", width=0.5))
    with pytest.raises(BackboneError, match="batch norm differs"):
        init_from_vgg_a(deep, VGG("A", width=0.25, batch_norm=True))
    with pytest.raises(BackboneError, match="not a configuration A VGG"):
        init_from_vgg_a(deep, VGG("B", width=0.25).state_dict())
