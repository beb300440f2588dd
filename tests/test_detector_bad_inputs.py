"""Bad input to the detector: a stale proposal cache, a checkpoint for another model, a NaN loss, empty images."""
import pytest
import torch

from detect.cli import main as cli
from detect.config import load_config
from detect.engine.detection_config import DetectionConfig
from detect.errors import UserError
from detect.utils.checkpoint import load_checkpoint
from detector_setup import tiny_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("proposals")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache):
    """A one-step fast-mode checkpoint on thin VGG-11."""
    tmp = tmp_path_factory.mktemp("trained")
    config = tiny_config(tmp, cache, train={"steps": 1})
    assert cli(["train", "--config", str(config)]) == 0
    return config, tmp / "run" / "last.pth"


def test_proposal_cache_of_a_changed_dataset_is_refused(tmp_path):
    from detect.data.shapes import write_shapes
    from detect.data.spec import build_dataset
    from detect.engine.detection_data import cached_proposals

    root = write_shapes(tmp_path / "voc", 10, 0, "voc")
    cfg = load_config(DetectionConfig, tiny_config(tmp_path, tmp_path / "cache"))
    cached_proposals(build_dataset(f"voc:{root}:train"), cfg.proposals, progress=False)
    split_file = root / "ImageSets" / "Main" / "train.txt"
    split_file.write_text("\n".join(split_file.read_text().split()[:-1]) + "\n")  # one image fewer
    with pytest.raises(UserError, match="manifest.json: this cache holds proposals for dataset_fingerprint"):
        cached_proposals(build_dataset(f"voc:{root}:train"), cfg.proposals, progress=False)


def test_checkpoint_for_another_backbone_is_a_clear_error(trained, tmp_path, capsys):
    config, checkpoint = trained
    code = cli(["test", "--config", str(config), "--checkpoint", str(checkpoint), "model.backbone=vgg13",
                "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert str(checkpoint) in err and "model.backbone='vgg11'" in err and "'vgg13'" in err


def test_checkpoint_for_another_class_list_is_a_clear_error(trained):
    from detect.engine.detection_inference import load_detector

    config, checkpoint = trained
    cfg = load_config(DetectionConfig, config)
    with pytest.raises(UserError, match=r"checkpoint classes \['circle', 'rectangle', 'triangle'\] differ"):
        load_detector(checkpoint, cfg, ["RBC", "WBC", "Platelets"])


def test_resuming_from_a_checkpoint_of_another_width_is_refused(trained, tmp_path, capsys):
    config, checkpoint = trained
    assert cli(["train", "--config", str(config), "model.width=0.125", f"train.out_dir={tmp_path}",
                "--resume", str(checkpoint)]) == 2
    assert "checkpoint was trained with model.width=0.0625, but the config asks for 0.125" in capsys.readouterr().err


def test_a_classification_checkpoint_is_not_a_detector(tmp_path):
    from detect.engine.detection_inference import load_detector
    from detect.utils.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "classifier.pth", {"model": {}, "step": 3})
    with pytest.raises(UserError, match="not a detector checkpoint"):
        load_detector(path)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, cache, capsys):
    import re

    config = tiny_config(tmp_path, cache, train={"steps": 20, "lr": 1.0e12})
    assert cli(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"training loss became (nan|inf) at step \d+; stopped; the last good checkpoint .*last.pth "
                     r"is kept as it was", err), err
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pth")
    assert 1 <= checkpoint["step"] < 20
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())


def test_images_without_objects_train_and_detect(tmp_path, cache):
    """Every image emptied of objects: training sees only background, inference returns empty or low scores."""
    from detect.engine.detection_data import ProposalDataset, cached_proposals, join_datasets
    from detect.models.detector import build_detector

    cfg = load_config(DetectionConfig, tiny_config(tmp_path, cache))
    dataset = join_datasets(cfg.data.train)
    data = ProposalDataset(dataset, cached_proposals(dataset, cfg.proposals, progress=False), 200)
    model = build_detector(cfg.model, dataset.num_classes, cfg.test).train()
    images, proposals = [data[0][0], data[1][0]], [data[0][2], data[1][2]]
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model(images, proposals, [empty, empty])
    assert torch.isfinite(losses["loss_classifier"]) and float(losses["loss_box"].detach()) == 0.0
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model(images, [torch.zeros(0, 4), proposals[1]])
    assert out[0]["boxes"].shape == (0, 4) and out[0]["labels"].shape == (0,)
