"""A NaN injected into each trainer's forward pass at step 3 stops the run at that step, names the step
and the loss, and leaves last.pth as it was after step 2 (finite weights, no later write)."""
from __future__ import annotations

import pytest
import torch

from detect.config import load_config
from detect.data.classification import write_synthetic_image_folder
from detect.engine.classification_config import PretrainConfig
from detect.engine.classification_trainer import ClassificationTrainer
from detect.engine.detection_config import DetectionConfig
from detect.engine.detection_trainer import DetectionTrainer
from detect.engine.multibox_trainer import MultiBoxTrainConfig, MultiBoxTrainer
from detect.engine.train_loop import TrainingDiverged
from detect.utils.checkpoint import load_checkpoint
from detector_setup import tiny_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")
NAN_STEP = 3


def poison(output):
    """The same structure with every floating tensor (or dict / tuple of them) made NaN."""
    if isinstance(output, torch.Tensor):
        return output * float("nan") if output.is_floating_point() else output
    if isinstance(output, dict):
        return {k: poison(v) for k, v in output.items()}
    if isinstance(output, (tuple, list)):
        return type(output)(*map(poison, output)) if hasattr(output, "_fields") else type(output)(map(poison, output))
    return output


def detector(tmp_path):
    cfg = load_config(DetectionConfig, tiny_config(tmp_path, tmp_path / "proposals", train={"steps": 6, "fit_check_images": 0}))
    return DetectionTrainer(cfg), "loss_classifier"


def classifier(tmp_path):
    root = write_synthetic_image_folder(tmp_path / "images", num_classes=3, train_per_class=4, val_per_class=1, size=40)
    cfg = load_config(PretrainConfig, overrides=[
        "model.name=vgg11", "model.width=0.0625", "model.options={init: kaiming}", "data.augment.crop_size=32",
        "data.augment.scale=[32,40]", "data.workers=0", "optim.batch_size=2", "run.epochs=1", "run.checkpoint_every=1",
        "run.tensorboard=false", "run.progress=false", "run.device=cpu", f"data.root={root}",
        f"run.out_dir={tmp_path / 'run'}"])
    return ClassificationTrainer(cfg), "loss"


def multibox(tmp_path):
    cfg = load_config(MultiBoxTrainConfig, None, [
        "data.train=shapes:20:0:train", "model.backbone=googlenet_bn", "model.width=0.125", "model.num_priors=8",
        "model.input_size=64", "optim.batch_size=2", "optim.epochs=1", "run.device=cpu", "run.amp=false",
        "run.checkpoint_every=1", "run.progress=false", f"run.out_dir={tmp_path / 'run'}"])
    return MultiBoxTrainer(cfg), "loc"


@pytest.mark.parametrize("task", [detector, classifier, multibox])
def test_nan_at_a_step_stops_there_naming_it_and_keeps_the_last_good_checkpoint(tmp_path, task):
    trainer, loss_name = task(tmp_path)
    forwards = []

    def nan_at_step(module, args, output):
        if module.training:
            forwards.append(1)
            if len(forwards) == NAN_STEP:
                return poison(output)
        return output

    trainer.model.register_forward_hook(nan_at_step)
    with pytest.raises(TrainingDiverged, match=rf"became nan at step {NAN_STEP}; stopped; the last good checkpoint "
                                               rf".*last.pth is kept as it was\. Non-finite: .*{loss_name} = nan") as err:
        trainer.train()
    assert "loss = nan" in str(err.value)
    kept = load_checkpoint(trainer.out_dir / "last.pth")
    assert kept["step"] == NAN_STEP - 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters()), "the NaN step updated nothing"
