"""`detect pretrain` end to end on a synthetic image folder: train, then the table of every protocol;
`--eval-only` with two checkpoints adds their ensemble; bad input is one clear error line."""
from __future__ import annotations

import json

import pytest

from detect.cli import main as cli_main
from detect.evaluation.classification import PROTOCOLS
from detect.utils.checkpoint import load_checkpoint

# A thin ResNet-18 (global pooling, so dense evaluation works at 32 px) for one short epoch.
TINY = ["model.name=resnet18", "model.width=0.125", "model.options={}", "data.workers=0", "data.synthetic.num_classes=3",
        "data.synthetic.train_per_class=6", "data.synthetic.val_per_class=2", "data.synthetic.size=40",
        "data.augment.crop_size=32", "data.augment.scale=[32,40]", "optim.lr=0.05", "optim.batch_size=6",
        "run.epochs=1", "run.tensorboard=false", "run.progress=false", "eval.scale=36", "eval.scales=[32,40]",
        "eval.grid=3", "eval.workers=0"]


@pytest.mark.slow
def test_pretrain_trains_then_prints_every_protocol_and_the_ensemble(tmp_path, capsys):
    images, out_a, out_b = tmp_path / "images", tmp_path / "a", tmp_path / "b"
    assert cli_main(["pretrain", "--config", "configs/pretrain_tiny_cpu.yaml", "--device", "cpu", *TINY,
                     f"data.root={images}", f"run.out_dir={out_a}"]) == 0
    printed = capsys.readouterr().out
    assert "epoch 1: val top-1 accuracy" in printed
    for protocol in PROTOCOLS:
        assert protocol in printed
    result = json.loads((out_a / "evaluation.json").read_text())
    assert result["images"] == 6 and {r["protocol"] for r in result["rows"]} == set(PROTOCOLS)
    assert all(0 <= r["top1_error"] <= 100 and r["top5_error"] == 0 for r in result["rows"])  # 3 classes: top-5 = all
    ckpt = load_checkpoint(out_a / "best.pth")
    assert ckpt["epoch"] == 1 and ckpt["classes"] == sorted(ckpt["classes"]) and len(ckpt["classes"]) == 3

    assert cli_main(["pretrain", "--config", "configs/pretrain_tiny_cpu.yaml", "--device", "cpu", "--no-eval",
                     *TINY, "run.seed=1", f"data.root={images}", f"run.out_dir={out_b}"]) == 0
    capsys.readouterr()
    assert cli_main(["pretrain", "--config", "configs/pretrain_tiny_cpu.yaml", "--eval-only",
                     "--checkpoint", str(out_a / "best.pth"), "--checkpoint", str(out_b / "last.pth"),
                     *TINY, f"data.root={images}", f"run.out_dir={tmp_path / 'eval'}"]) == 0
    table = capsys.readouterr().out
    rows = json.loads((tmp_path / "eval" / "evaluation.json").read_text())["rows"]
    assert [r["model"] for r in rows].count("ensemble of 2") == len(PROTOCOLS)
    assert "ensemble of 2" in table and "best.pth" in table and "last.pth" in table


def test_unknown_config_key_and_missing_folder_are_one_line_errors(tmp_path, capsys):
    assert cli_main(["pretrain", "--config", "configs/pretrain_tiny_cpu.yaml", "optim.lrate=0.1"]) == 2
    assert "unknown key 'optim.lrate'" in capsys.readouterr().err
    assert cli_main(["pretrain", "--config", "configs/pretrain_tiny_cpu.yaml", "data.synthetic=null",
                     f"data.root={tmp_path / 'missing'}", f"run.out_dir={tmp_path / 'out'}", "run.device=cpu"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "missing" / "train") in err and "not found" in err


def test_init_from_a_checkpoint_that_is_not_vgg_a_is_a_clear_error(tmp_path, capsys):
    images = tmp_path / "images"
    assert cli_main(["pretrain", "--config", "configs/pretrain_tiny_cpu.yaml", "--device", "cpu", "--no-eval", *TINY,
                     "run.max_steps=1", f"data.root={images}", f"run.out_dir={tmp_path / 'r18'}"]) == 0
    capsys.readouterr()
    code = cli_main(["pretrain", "--config", "configs/pretrain_tiny_cpu.yaml", "--device", "cpu", *TINY,
                     "model.name=vgg16", "model.options={init: normal}", f"model.init_from={tmp_path / 'r18' / 'last.pth'}", f"data.root={images}",
                     f"run.out_dir={tmp_path / 'vgg'}"])
    assert code == 2
    assert "cannot pre-initialise vgg16" in capsys.readouterr().err


def test_pretrain_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        cli_main(["pretrain", "--help"])
    out = capsys.readouterr().out
    assert all(opt in out for opt in ("--resume", "--eval-only", "--checkpoint", "--device"))
