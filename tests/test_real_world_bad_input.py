"""What a real dataset and a real machine bring: damaged images, odd files, bad numbers, unwritable
outputs. Each is a clear error naming the file, a counted skip, or correct behaviour."""
import json
import logging
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detect.cli import main as cli
from detect.data import images
from detect.data.coco import read_coco
from detect.data.images import read_image_rgb
from detect.data.shapes import write_shapes
from detect.errors import DatasetError, UserError
from detect.proposals.selective_search import SelectiveSearch
from detect.utils.checkpoint import save_checkpoint
from detect.utils.files import atomic_write_bytes
from detector_setup import tiny_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")

BCCD = Path(__file__).resolve().parents[2] / "shared/datasets/BCCD"


def jpeg_bytes() -> bytes:
    if BCCD.is_dir():
        return (BCCD / "JPEGImages" / "BloodImage_00000.jpg").read_bytes()
    rng = np.random.default_rng(0)
    return cv2.imencode(".jpg", rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))[1].tobytes()


def test_a_jpeg_20_bytes_short_decodes_with_one_warning_per_file(tmp_path, caplog):
    data = jpeg_bytes()
    path = tmp_path / "short.jpg"
    path.write_bytes(data[:-20])
    images.damaged_images.discard(str(path))
    with caplog.at_level(logging.WARNING, logger="detect.data.images"):
        first, second = read_image_rgb(path), read_image_rgb(path)
    whole = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert first.shape == whole.shape and np.array_equal(first, second)
    assert np.abs(first[:8].astype(int) - whole[:8]).mean() < 2  # the top rows are the real picture
    warnings = [r.getMessage() for r in caplog.records if "short.jpg" in r.getMessage()]
    assert len(warnings) == 1 and "truncated" in warnings[0]


def test_a_float_tiff_is_scaled_not_black(tmp_path):
    pixels = np.linspace(0, 1, 20 * 30 * 3, dtype=np.float32).reshape(20, 30, 3)
    assert cv2.imwrite(str(tmp_path / "f.tif"), pixels)
    image = read_image_rgb(tmp_path / "f.tif")
    assert image.dtype == np.uint8 and image.max() == 255 and 120 < image.mean() < 135


def voc_with_damaged_images(tmp_path: Path, count: int = 30) -> Path:
    root = write_shapes(tmp_path / "voc", count, 0, "voc")
    train_ids = (root / "ImageSets" / "Main" / "train.txt").read_text().split()
    (root / "JPEGImages" / f"{train_ids[2]}.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # undecodable
    good = cv2.imencode(".jpg", cv2.imread(str(root / "JPEGImages" / f"{train_ids[3]}.png")))[1].tobytes()
    (root / "JPEGImages" / f"{train_ids[3]}.png").write_bytes(good[:-20])  # truncated, decodable in part
    return root


def test_data_stats_check_images_reports_damaged_and_unusable_images(tmp_path, capsys):
    root = voc_with_damaged_images(tmp_path)
    assert cli(["data-stats", "--data", f"voc:{root}:train", "--check-images", "--json", str(tmp_path / "s.json")]) == 1
    out = capsys.readouterr().out
    assert "17 of 18 decoded (1 damaged" in out and "1 unusable" in out
    assert "damaged: " in out and "unusable: " in out and "not a readable image" in out
    checked = json.loads((tmp_path / "s.json").read_text())["images_checked"]
    assert checked["decoded"] == 17 and len(checked["damaged"]) == 1 and len(checked["unreadable"]) == 1


def test_training_skips_and_counts_an_undecodable_image_unless_strict(tmp_path, capsys, caplog):
    root = voc_with_damaged_images(tmp_path)
    config = tiny_config(tmp_path, tmp_path / "cache", data={"train": [f"voc:{root}:train"], "test": None},
                         train={"steps": 1})
    with caplog.at_level(logging.WARNING):
        assert cli(["train", "--config", str(config)]) == 0
    skipped = [r.getMessage() for r in caplog.records if "unreadable image" in r.getMessage()]
    assert skipped and all("1 unreadable image" in m and "not a readable image" in m for m in skipped)
    captured = capsys.readouterr()
    assert "proposals selective_search" not in captured.err  # train.progress=false silences the proposal bar too
    header = captured.out
    assert "18 images" in header and "classes  3: circle, rectangle, triangle" in header and "device   cpu" in header
    assert f"output   {tmp_path / 'run'}" in header
    assert cli(["train", "--config", str(config), "data.strict_images=true", f"train.out_dir={tmp_path / 'run2'}"]) == 2
    err = capsys.readouterr().err
    assert "not a readable image" in err and "strict_images" in err and err.count("\n") == 1


def test_propose_skips_an_undecodable_image_and_scores_recall_on_the_rest(tmp_path, capsys, caplog):
    root = voc_with_damaged_images(tmp_path, count=10)
    with caplog.at_level(logging.WARNING):
        assert cli(["propose", "--data", f"voc:{root}:train", "--param", "strategy=single", "--out",
                    str(tmp_path / "p"), "--workers", "0", "--eval", "--no-progress"]) == 0
    assert any("skipped 1 unreadable image" in r.getMessage() for r in caplog.records)
    (recall,) = (tmp_path / "p").rglob("recall.json")
    assert json.loads(recall.read_text())["num_images"] == 5
    assert cli(["propose", "--data", f"voc:{root}:train", "--param", "strategy=single", "--out",
                str(tmp_path / "p2"), "--workers", "0", "--no-progress", "--strict-images"]) == 2
    assert "not a readable image" in capsys.readouterr().err


def coco_file(tmp_path: Path, **changes) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((30, 40, 3), np.uint8))
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
            "categories": [{"id": 1, "name": "cell"}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10]}]}
    for section, value in changes.items():
        data[section] = value
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))  # json writes NaN and Infinity as JavaScript does, and reads them back
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_coco_bbox_with_nan_or_inf_is_an_error_naming_the_file(tmp_path, value):
    path = coco_file(tmp_path, annotations=[{"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, value, 10]}])
    with pytest.raises(DatasetError, match=r"ann\.json: annotations\[0\] \(id 7\) bbox .* NaN or infinity"):
        read_coco(path, tmp_path / "images")


def test_coco_image_width_that_is_not_a_number_is_an_error_naming_the_file(tmp_path):
    path = coco_file(tmp_path, images=[{"id": 1, "file_name": "a.png", "width": "wide", "height": 30}])
    with pytest.raises(DatasetError, match=r"ann\.json: images\[0\] \(id 1\) width 'wide' is not a positive integer"):
        read_coco(path, tmp_path / "images")


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", "lr must be a positive finite number, got -1"),
    ("train.weight_decay=-0.1", "weight_decay must be >= 0"),
    ("train.lr=nan", "lr must be a positive finite number, got nan"),
    ("train.checkpoint_every=-5", "checkpoint_every must be >= 0"),
])
def test_invalid_numbers_are_one_line_config_errors(tmp_path, capsys, override, message):
    config = tiny_config(tmp_path, tmp_path / "cache")
    assert cli(["train", "--config", str(config), override]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("extra, message", [
    (["model.backbone=vgg17"], "unknown backbone"),
    (["--weights", "no/such/weights.pth"], "no/such/weights.pth: no such weights file"),
])
def test_unknown_backbone_or_missing_weights_fail_before_any_proposal(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setattr(SelectiveSearch, "propose", lambda self, image: pytest.fail("proposals computed first"))
    config = tiny_config(tmp_path, tmp_path / "cache")
    assert cli(["train", "--config", str(config), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_overrides_on_both_sides_of_options(tmp_path, capsys):
    config = tiny_config(tmp_path, tmp_path / "cache")
    assert cli(["train", "train.steps=7", "--config", str(config), "train.lr=0.5", "--print-config",
                "model.width=0.125"]) == 0
    printed = capsys.readouterr().out
    assert "steps: 7" in printed and "lr: 0.5" in printed and "width: 0.125" in printed


def test_atomically_written_files_respect_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.json", lambda fh: fh.write(b"{}"))
        save_checkpoint(tmp_path / "c.pth", {"step": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "c.pth").stat().st_mode) == 0o640


def test_a_full_disk_while_saving_a_checkpoint_is_one_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "last.pth", {"step": torch.tensor(1)})

    def full_disk(obj, fh, *args, **kwargs):
        fh.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 123 vs 456")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError, match=r"last\.pth: could not write the checkpoint .*disk full"):
        save_checkpoint(tmp_path / "last.pth", {"step": torch.tensor(2)})
    monkeypatch.undo()
    assert int(torch.load(tmp_path / "last.pth", weights_only=True)["step"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    config = tiny_config(tmp, tmp / "cache", train={"steps": 1})
    assert cli(["train", "--config", str(config)]) == 0
    return config, tmp / "run" / "last.pth"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_line_before_any_work(trained, tmp_path, capsys):
    config, checkpoint = trained
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o555)
    assert cli(["test", "--config", str(config), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "ro")]) == 2
    assert "not writable" in capsys.readouterr().err


def test_an_output_path_that_is_a_file_is_one_line_and_nothing_half_written(trained, tmp_path, capsys, monkeypatch):
    config, checkpoint = trained
    (tmp_path / "taken").write_text("a file, not a folder")
    monkeypatch.setattr(SelectiveSearch, "propose", lambda self, image: pytest.fail("work started first"))
    assert cli(["test", "--config", str(config), "--checkpoint", str(checkpoint), "--out",
                str(tmp_path / "taken" / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "taken") in err and "cannot create the output folder" in err
    for command in (["eval", "--data", "shapes:10:0:test", "--results", str(tmp_path / "none.json")],
                    ["convert", "--data", "shapes:10:0:test", "--out", str(tmp_path / "taken" / "gt.json")],
                    ["data-stats", "--data", "shapes:10:0:test", "--json", str(tmp_path / "taken" / "s.json")]):
        assert cli(command) == 2
        assert capsys.readouterr().err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_an_image_id_with_a_space_fails_detect_test_before_inference(trained, tmp_path, capsys, monkeypatch):
    config, checkpoint = trained
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((64, 64, 3), np.uint8))
    ann = {"images": [{"id": 1, "name": "image one", "file_name": "a.png", "width": 64, "height": 64}],
           "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "rectangle"}, {"id": 3, "name": "triangle"}],
           "annotations": []}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    monkeypatch.setattr(SelectiveSearch, "propose", lambda self, image: pytest.fail("work started first"))
    assert cli(["test", "--config", str(config), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                "--data", f"coco:{tmp_path / 'ann.json'}:{tmp_path / 'images'}"]) == 2
    assert "image id 'image one'" in capsys.readouterr().err


def test_progress_bars_redraw_rarely_when_not_writing_to_a_terminal():
    import io

    from detect.utils.progress import progress_bar

    import time

    from tqdm import tqdm

    def redraws(make_bar) -> int:
        log = io.StringIO()  # a log file: not a terminal
        for _ in make_bar(range(60), desc="work", file=log):
            time.sleep(0.01)
        return log.getvalue().count("\r")

    assert redraws(progress_bar) <= 3  # the start and the end
    assert redraws(tqdm) > 3  # plain tqdm redraws every 0.1 s of the 0.6 s
