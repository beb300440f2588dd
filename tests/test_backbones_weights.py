"""Weights load strictly from a local file or torchvision's cache; bad files and no network are clear errors."""
import urllib.request

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from backbones import BackboneError, build_backbone, load_weights, read_state_dict
from detect.cli import main as cli_main

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty torch hub cache: https goes through a proxy on a closed local port, so
    nothing can be downloaded and a download attempt fails at once instead of hanging."""
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)  # urlopen re-reads the proxy settings
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


@pytest.fixture
def resnet18_state():
    torch.manual_seed(0)
    return tvm.resnet18(weights=None).state_dict()


def test_a_plain_state_dict_file_loads_strictly(tmp_path, resnet18_state):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18_state, path)
    model = build_backbone("resnet18")
    assert load_weights(model, path) == str(path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, resnet18_state[key]), key


def test_a_checkpoint_dict_and_a_ddp_prefix_are_accepted(tmp_path, resnet18_state):
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": {f"module.{k}": v for k, v in resnet18_state.items()}, "step": 7}, path)
    state = read_state_dict(path)
    assert state.keys() == resnet18_state.keys()
    model = build_backbone("resnet18")
    load_weights(model, path)
    assert torch.equal(model.fc.weight, resnet18_state["fc.weight"])


def test_weights_of_another_architecture_name_the_file_and_the_first_keys(tmp_path, resnet18_state):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18_state, path)
    with pytest.raises(BackboneError) as err:
        load_weights(build_backbone("resnet34", width=0.25), path)
    message = str(err.value)
    assert message.startswith(f"{path}: weights do not fit ResNet-34")
    assert "missing keys" in message and "layer1.2.conv1.weight" in message
    assert "shape mismatches" in message and "conv1.weight (64, 3, 7, 7) in file vs (16, 3, 7, 7) in model" in message
    with pytest.raises(BackboneError, match=r"fc.weight \(1000, 512\) in file vs \(10, 512\) in model"):
        load_weights(build_backbone("resnet18", num_classes=10), path)


def test_bad_files_are_clear_errors(tmp_path):
    model = build_backbone("resnet18", width=0.125)
    with pytest.raises(BackboneError, match="missing.pth: no such weights file"):
        load_weights(model, tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(BackboneError, match="garbage.pth: not a readable PyTorch weights file"):
        load_weights(model, garbage)
    pickled_module = tmp_path / "module.pth"  # a whole pickled nn.Module: weights_only refuses to unpickle it
    torch.save(nn.Linear(2, 2), pickled_module)
    with pytest.raises(BackboneError, match="module.pth: not a readable PyTorch weights file"):
        load_weights(model, pickled_module)
    not_tensors = tmp_path / "config.pth"
    torch.save({"lr": 0.1}, not_tensors)
    with pytest.raises(BackboneError, match="config.pth: expected a state_dict"):
        load_weights(model, not_tensors)


def test_torchvision_weights_offline_fail_with_how_to_pass_a_local_file(offline):
    model = build_backbone("resnet18")
    with pytest.raises(BackboneError) as err:
        load_weights(model, "torchvision", timeout=5)
    message = str(err.value)
    assert "cannot fetch torchvision weights ResNet18_Weights.DEFAULT" in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "--weights PATH" in message and str(offline / "resnet18-f37072fd.pth") in message
    with pytest.raises(BackboneError, match="torchvision has no weights for VGG config C"):
        load_weights(build_backbone("vgg16_c", width=0.125), "torchvision")


def test_torchvision_weights_load_from_the_hub_cache_without_network(offline, resnet18_state):
    offline.mkdir(parents=True)
    torch.save(resnet18_state, offline / "resnet18-f37072fd.pth")  # where torchvision caches that download
    model = build_backbone("resnet18")
    assert load_weights(model, "torchvision", timeout=5) == str(offline / "resnet18-f37072fd.pth")
    assert torch.equal(model.layer4[1].conv2.weight, resnet18_state["layer4.1.conv2.weight"])


def test_a_corrupt_file_in_the_hub_cache_is_named(offline):
    offline.mkdir(parents=True)
    (offline / "resnet18-f37072fd.pth").write_bytes(b"truncated download")
    with pytest.raises(BackboneError, match=r"resnet18-f37072fd.pth: torchvision weights .* not readable"):
        load_weights(build_backbone("resnet18"), "torchvision", timeout=5)


def test_torchvision_googlenet_weights_fit_a_model_without_aux_heads_and_its_input_scaling(offline):
    torch.manual_seed(0)
    # What googlenet(weights=...) builds: aux heads in the file, TensorFlow input scaling switched on.
    reference = tvm.googlenet(weights=None, aux_logits=True, transform_input=True, init_weights=True).eval()
    offline.mkdir(parents=True)
    torch.save(reference.state_dict(), offline / "googlenet-1378be20.pth")
    model = build_backbone("googlenet_bn", aux_logits=False)
    load_weights(model, "torchvision", timeout=5)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= 1e-5


def test_cli_lists_backbones_and_checks_a_weights_file(tmp_path, capsys, resnet18_state):
    assert cli_main(["backbones", "vgg16", "resnet101"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:3]}
    assert rows["vgg16"][1:] == ["138,357,544", "30.94", "16", "512", "4096"]
    assert rows["resnet101"][1:] == ["44,549,160", "15.60", "16", "1024", "2048"]
    assert cli_main(["backbones", "googlenet_bn", "--option", "aux_logits=false"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["googlenet_bn", "6,624,904", "3.00", "16", "832", "1024"]
    path = tmp_path / "r18.pth"
    torch.save(resnet18_state, path)
    assert cli_main(["backbones", "resnet18", "--weights", str(path)]) == 0
    assert f"loaded {path} into resnet18" in capsys.readouterr().out
    assert cli_main(["backbones", "resnet34", "--weights", str(path)]) == 2
    assert f"{path}: weights do not fit ResNet-34" in capsys.readouterr().err
    assert cli_main(["backbones", "resnet50x"]) == 2
    assert "unknown backbone 'resnet50x'" in capsys.readouterr().err
