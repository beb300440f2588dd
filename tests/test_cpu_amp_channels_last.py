"""The GPU's speed settings exercised on the CPU: bf16 autocast and channels_last (detect/utils/device.py).

On CUDA, `train.amp` / `run.amp` (auto) runs the forward pass under autocast and `channels_last`
(auto) stores the convolution weights and activations NHWC. Both can be asked for on the CPU too
(`amp=bf16`, `channels_last=true`), so the code paths a GPU takes run here: a few training steps and
the inference of a thin detector and of the classifier, each compared with the same run in fp32.

Tolerances (what `pytest -s` prints was measured; each bound leaves 2-50x room), and why:
- channels_last only changes the memory layout: the same sums in another order, so everything agrees
  to fp32 rounding: losses and weights after 3 steps relative 1e-4, probabilities 1e-5 absolute
  (measured 0 to 6e-7).
- bf16 keeps 8 significant bits (rounding 2^-9 = 0.2% per operation). Forward results stay close:
  soft-max probabilities within 0.03 absolute of fp32 (measured 6.5e-4), a first step's loss (same
  weights) within 1%. Gradients are noisier: in thin layers (4-32 channels) at initialisation the
  bf16 gradient differs from fp32's by 5-25% relative (measured with plain torch on the bare
  backbones, so bf16's nature, not this code), and later losses move by that fraction of each
  update: detector losses over 3 steps within 3% (measured 1.6e-4), the thin VGG-A-BN classifier's
  within 10% (measured 2.1%). Detector weights after 3 steps: 1e-2 relative per tensor (measured
  2.6e-3); biases, initialised at zero, hold nothing but the 3 updates, i.e. the gradient noise
  itself: 0.35 (measured 0.17). A broken autocast (fp16 overflow, a dtype mismatch, weights left in
  bf16, autocast not on at all: checked by `not torch.equal`) lands far outside these bounds.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detect.cli import main as cli_main
from detect.config import load_config
from detect.engine.classification_config import PretrainConfig
from detect.engine.classification_trainer import ClassificationTrainer
from detect.engine.detection_config import DetectionConfig
from detect.engine.detection_trainer import DetectionTrainer
from detect.data.classification import write_synthetic_image_folder
from detect.errors import ConfigError, UserError
from detect.utils.device import amp_dtype, autocast, grad_scaler, prepare_model, uses_channels_last
from detect.utils.metric_logger import read_metrics
from tests.detector_setup import tiny_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CPU = torch.device("cpu")
STEPS = 3


def test_settings_resolve_per_device():
    assert amp_dtype(CPU, "auto") is None and amp_dtype(CPU, True) is None, "auto: no autocast on the CPU (as before)"
    assert amp_dtype(CPU, "off") is None and amp_dtype(CPU, False) is None
    assert amp_dtype(CPU, "bf16") is torch.bfloat16 and amp_dtype(CPU, "fp16") is torch.float16
    cuda = torch.device("cuda", 0)
    assert amp_dtype(cuda, "off") is None and amp_dtype(cuda, "bf16") is torch.bfloat16
    assert not uses_channels_last(CPU, "auto") and uses_channels_last(cuda, "auto")
    assert uses_channels_last(CPU, True) and not uses_channels_last(cuda, False)
    assert not grad_scaler(CPU, "bf16").is_enabled(), "bf16 needs no gradient scaling"
    assert grad_scaler(CPU, "fp16").is_enabled()
    with pytest.raises(UserError, match="bf17"):
        amp_dtype(CPU, "bf17")
    conv = prepare_model(torch.nn.Conv2d(3, 4, 3), CPU, True)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with autocast(CPU, "bf16"):
        assert conv(torch.rand(1, 3, 8, 8)).dtype is torch.bfloat16


def test_config_values_are_checked(tmp_path):
    cfg = load_config(DetectionConfig, overrides=["train.amp=bf16", "train.channels_last=true"])
    assert cfg.train.amp == "bf16" and cfg.train.channels_last is True
    assert load_config(DetectionConfig, overrides=["train.amp=off"]).train.amp in ("off", False)
    assert load_config(PretrainConfig, overrides=["run.amp=fp16", "run.channels_last=false"]).run.amp == "fp16"
    with pytest.raises(ConfigError, match="train.amp"):
        load_config(DetectionConfig, overrides=["train.amp=bf17"])
    with pytest.raises(ConfigError, match="run.channels_last"):
        load_config(PretrainConfig, overrides=["run.channels_last=sometimes"])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def step_losses(out_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(out_dir / "metrics.jsonl") if r["split"] == "train"]


# ---------------------------------------------------------------------------------------- detector
@pytest.fixture(scope="module")
def detector_runs(tmp_path_factory):
    """Three runs of a thin Fast R-CNN detector, STEPS steps each, from the same seed: fp32, bf16, channels_last."""
    tmp = tmp_path_factory.mktemp("amp_detector")
    cache = tmp / "cache"
    runs = {}
    for name, amp, layout in [("fp32", "off", False), ("bf16", "bf16", False), ("channels_last", "off", True)]:
        path = tiny_config(tmp / name, cache, train={"steps": STEPS, "amp": amp, "channels_last": layout,
                                                     "checkpoint_every": 100, "fit_check_images": 0})
        cfg = load_config(DetectionConfig, path)
        trainer = DetectionTrainer(cfg)
        trainer.fit()
        runs[name] = trainer
    return runs


def region_probabilities(trainer: DetectionTrainer, amp: str) -> tuple[torch.Tensor, torch.dtype]:
    """Soft-max class probabilities of the test-scale inference on 3 training images with their proposals."""
    model = trainer.model.eval()
    images, _, proposals = zip(*[trainer.train_data[i] for i in range(3)])
    with torch.no_grad(), autocast(CPU, amp):
        batch, _, boxes, _ = model.prepare(list(images), list(proposals), None)
        logits, _ = model.score_regions(batch, boxes)
    return logits.float().softmax(-1), logits.dtype


def test_detector_layout_and_precision_are_applied(detector_runs):
    conv = next(m for m in detector_runs["channels_last"].model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    conv = next(m for m in detector_runs["fp32"].model.modules() if isinstance(m, torch.nn.Conv2d))
    assert not conv.weight.is_contiguous(memory_format=torch.channels_last), "auto/false: no channels_last on the CPU"
    assert all(p.dtype is torch.float32 for p in detector_runs["bf16"].model.parameters()), "autocast keeps fp32 weights"
    _, dtype = region_probabilities(detector_runs["bf16"], "bf16")
    assert dtype is torch.bfloat16, "the bf16 run's forward really ran under bf16 autocast"


def test_detector_training_bf16_and_channels_last_close_to_fp32(detector_runs):
    reference = torch.tensor(step_losses(detector_runs["fp32"].out_dir))
    assert len(reference) == STEPS
    bf16 = torch.tensor(step_losses(detector_runs["bf16"].out_dir))
    layout = torch.tensor(step_losses(detector_runs["channels_last"].out_dir))
    diff_bf16 = ((bf16 - reference).abs() / reference.abs()).max().item()
    diff_layout = ((layout - reference).abs() / reference.abs()).max().item()
    assert not torch.equal(bf16, reference), "bf16 autocast changed nothing: was it on?"
    assert diff_bf16 < 0.03, f"bf16 losses {bf16.tolist()} vs fp32 {reference.tolist()}: relative {diff_bf16:.4f}"
    assert diff_layout < 1e-4, f"channels_last losses vs fp32: relative {diff_layout:.2e}"
    print(f"\ndetector training, max relative loss difference vs fp32 over {STEPS} steps: bf16 {diff_bf16:.2e}, "
          f"channels_last {diff_layout:.2e}")
    weights = detector_runs["fp32"].model.state_dict()
    for name, tolerances in [("bf16", (1e-2, 0.35)), ("channels_last", (1e-4, 1e-4))]:
        worst = {"weights": 0.0, "biases": 0.0}
        for key, value in detector_runs[name].model.state_dict().items():
            if value.is_floating_point() and weights[key].norm() > 0:
                kind = "biases" if key.endswith(".bias") else "weights"
                worst[kind] = max(worst[kind], relative(value.float(), weights[key].float()))
        print(f"detector {name}: parameters after {STEPS} steps vs fp32, max relative difference per tensor: "
              f"weights {worst['weights']:.2e}, zero-initialised biases {worst['biases']:.2e}")
        assert worst["weights"] < tolerances[0], f"{name}: weights differ from fp32 by relative {worst['weights']:.2e}"
        assert worst["biases"] < tolerances[1], f"{name}: biases differ from fp32 by relative {worst['biases']:.2e}"


def test_detector_inference_bf16_and_channels_last_close_to_fp32(detector_runs):
    trainer = detector_runs["fp32"]
    reference, _ = region_probabilities(trainer, "off")
    bf16, _ = region_probabilities(trainer, "bf16")
    diff = (bf16 - reference).abs().max().item()
    print(f"\ndetector inference, soft-max probabilities of {len(reference)} regions vs fp32: bf16 max |diff| {diff:.2e}")
    assert 0 < diff < 0.03, f"bf16 inference: soft-max probabilities differ by {diff:.4f}"
    trainer.model = prepare_model(trainer.model, CPU, True)
    layout, _ = region_probabilities(trainer, "off")
    diff = (layout - reference).abs().max().item()
    print(f"detector inference: channels_last max |diff| {diff:.2e}")
    assert diff < 1e-5, f"channels_last inference: soft-max probabilities differ by {diff:.2e}"


def test_detect_test_runs_with_bf16_and_channels_last_on_the_cpu(detector_runs, tmp_path):
    """`detect test` honours train.amp / train.channels_last (the model is prepared by the device module)."""
    trainer = detector_runs["fp32"]
    config = trainer.out_dir.parent / "tiny_fast.yaml"
    scores = {}
    for name, options in [("fp32", []), ("gpu_paths", ["train.amp=bf16", "train.channels_last=true"])]:
        out = tmp_path / name
        assert cli_main(["test", "--config", str(config), "--checkpoint", str(trainer.out_dir / "last.pth"),
                         "--out", str(out), "--metrics", "voc07", *options]) == 0
        detections = json.loads((out / "detections.json").read_text())
        scores[name] = sorted(d["score"] for d in detections)[-20:]
    assert scores["fp32"] and len(scores["fp32"]) == len(scores["gpu_paths"])
    diff = max(abs(a - b) for a, b in zip(scores["fp32"], scores["gpu_paths"]))
    assert diff < 0.03, f"detect test: the top detection scores differ by {diff:.4f} under bf16 + channels_last"


@pytest.mark.parametrize("pool", ["align", "pool"])
@pytest.mark.parametrize("threads", [1, 2])
def test_roi_pooling_under_bf16_autocast_keeps_fp32_coordinates(threads, pool):
    """RoIAlign on bf16 features (the GPU's default AMP): RoIs stay fp32 (in bf16 a coordinate near
    600 px moves by up to 2 px), and the test-time threaded pooling on the CPU (worker threads do not
    inherit autocast) pools in fp32 instead of failing in torchvision's fp32-only CPU kernel.
    Features: a sawtooth of period 4 px in x (values k/4, exact in bf16), so a 1 px shift shows."""
    from detect.models.region_features import PooledRegions

    trunk = torch.nn.Conv2d(1, 1, 1, bias=False)
    torch.nn.init.ones_(trunk.weight)
    regions = PooledRegions(trunk, torch.nn.Flatten(), num_features=1, output_size=1, stride=1, pool=pool)
    x = torch.arange(700.0)
    image = ((x % 4) / 4).expand(1, 1, 4, 700).contiguous()
    boxes = [torch.tensor([[601.0 + k, 0.0, 602.0 + k, 1.0] for k in range(40)])]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            reference = regions(image, boxes)
            with autocast(CPU, "bf16"):
                pooled = regions(image, boxes)
    finally:
        torch.set_num_threads(before)
    assert pooled.dtype is torch.bfloat16
    diff = (pooled.float() - reference).abs().max().item()
    assert diff < 1e-2, f"bf16 RoI pooling differs from fp32 by {diff} (RoI coordinates rounded?)"


# ---------------------------------------------------------------------------------------- classifier
@pytest.fixture(scope="module")
def classifier_runs(tmp_path_factory):
    """A thin VGG-A-BN classifier, STEPS steps each from the same seed: fp32, bf16, channels_last."""
    tmp = tmp_path_factory.mktemp("amp_classifier")
    root = write_synthetic_image_folder(tmp / "images", num_classes=3, train_per_class=4, val_per_class=2,
                                        size=40, seed=0)
    runs = {}
    for name, amp, layout in [("fp32", "off", False), ("bf16", "bf16", False), ("channels_last", "off", True)]:
        cfg = load_config(PretrainConfig, overrides=[
            "model.name=vgg11_bn", "model.width=0.0625", "model.options={init: glorot, dropout: 0.0}",
            f"data.root={root}", "data.workers=0", "data.augment.crop_size=32", "data.augment.scale=[32,36]",
            "optim.lr=0.0005", "optim.batch_size=4", "run.epochs=1", f"run.max_steps={STEPS}", "run.log_every=1",
            "run.tensorboard=false", "run.progress=false", "run.device=cpu", f"run.amp={amp}",
            f"run.channels_last={str(layout).lower()}", f"run.out_dir={tmp / name}"])
        trainer = ClassificationTrainer(cfg)
        trainer.fit()
        runs[name] = trainer
    return runs


def test_classifier_training_and_inference_bf16_and_channels_last_close_to_fp32(classifier_runs):
    reference = torch.tensor(step_losses(classifier_runs["fp32"].out_dir))
    assert len(reference) == STEPS
    conv = next(m for m in classifier_runs["channels_last"].model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    for name, first_tolerance, tolerance in [("bf16", 0.01, 0.10), ("channels_last", 1e-5, 1e-4)]:
        losses = torch.tensor(step_losses(classifier_runs[name].out_dir))
        first = ((losses[0] - reference[0]).abs() / reference[0].abs()).item()
        assert first < first_tolerance, f"{name}: the first step's loss (same weights) differs by relative {first:.2e}"
        diff = ((losses - reference).abs() / reference.abs()).max().item()
        print(f"\nclassifier training, max relative loss difference vs fp32 over {STEPS} steps: {name} {diff:.2e}")
        assert diff < tolerance, f"{name} losses {losses.tolist()} vs fp32 {reference.tolist()}: relative {diff:.2e}"
    bf16 = torch.tensor(step_losses(classifier_runs["bf16"].out_dir))
    assert not torch.equal(bf16, reference), "bf16 autocast changed nothing: was it on?"

    model = classifier_runs["fp32"].model.eval()
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(images).softmax(-1)
        with autocast(CPU, "bf16"):
            logits = model(images)
        assert logits.dtype is torch.bfloat16
        diff = (logits.float().softmax(-1) - reference).abs().max().item()
        print(f"classifier inference, soft-max probabilities vs fp32: bf16 max |diff| {diff:.2e}")
        assert 0 < diff < 0.03, f"bf16 inference: soft-max probabilities differ by {diff:.4f}"
        layout = prepare_model(model, CPU, True)(images.contiguous(memory_format=torch.channels_last)).softmax(-1)
        diff = (layout - reference).abs().max().item()
        print(f"classifier inference: channels_last max |diff| {diff:.2e}")
        assert diff < 1e-5, f"channels_last inference: soft-max probabilities differ by {diff:.2e}"
