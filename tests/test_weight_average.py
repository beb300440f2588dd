"""The weight average: its arithmetic, what it averages, and what a training run saves and scores with it."""
import pytest
import torch
from torch import nn

from detect.cli import main as cli
from detect.engine.detection_inference import load_detector
from detect.engine.weight_average import WeightAverage
from detect.utils.checkpoint import load_checkpoint
from detector_setup import tiny_config


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())


def test_average_lerps_weights_and_batch_norm_statistics_with_a_ramped_decay():
    net = small_net()
    average = WeightAverage(net, decay=0.99)
    start = {k: v.clone() for k, v in average.module.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net.train()(torch.randn(2, 3, 8, 8))  # moves the running statistics, counts a batch
    live = net.state_dict()

    average.update(net)  # first update: decay min(0.99, 1/10) = 0.1
    got = average.module.state_dict()
    for key in ("0.weight", "1.bias", "1.running_mean", "1.running_var"):
        torch.testing.assert_close(got[key], 0.1 * start[key] + 0.9 * live[key], msg=key)
    assert got["1.num_batches_tracked"] == live["1.num_batches_tracked"] == 1
    assert average.updates == 1
    assert average.current_decay() == pytest.approx(2 / 11)
    for _ in range(2000):
        average.updates += 1
    assert average.current_decay() == 0.99


def test_average_of_an_unchanging_model_is_the_model_and_takes_no_gradients():
    net = small_net()
    average = WeightAverage(net, decay=0.9)
    for _ in range(5):
        average.update(net)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(average.module.state_dict()[key], value, msg=key)
    assert not any(p.requires_grad for p in average.module.parameters())
    assert not average.module.training


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\)"):
        WeightAverage(small_net(), decay)


@pytest.mark.usefixtures("torch_one_thread")
def test_training_saves_the_average_as_the_model_and_test_scores_it(tmp_path, capsys):
    cfg = tiny_config(tmp_path, tmp_path / "proposals", train={"steps": 3, "weight_average": 0.5})
    assert cli(["train", "--config", str(cfg)]) == 0
    ckpt = load_checkpoint(tmp_path / "run" / "last.pth")
    assert ckpt["average_updates"] == 3
    differs = [k for k, v in ckpt["model"].items()
               if v.is_floating_point() and not torch.equal(v, ckpt["trained_model"][k])]
    assert differs, "after 3 updates the average differs from the trained weights"
    model, _, _ = load_detector(tmp_path / "run" / "last.pth", device="cpu")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, ckpt["model"][key], rtol=0, atol=0, msg=key)


def test_bad_decay_in_the_config_is_refused(tmp_path, capsys):
    cfg = tiny_config(tmp_path, tmp_path / "proposals")
    assert cli(["train", "--config", str(cfg), "train.weight_average=1.0"]) != 0
    assert "weight_average" in capsys.readouterr().err
