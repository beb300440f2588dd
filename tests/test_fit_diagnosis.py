"""The training-fit check: the verdict logic alone, and a real run that cannot fit (lr 1e-9) saying so."""
import json

import pytest

from detect.cli import main as cli
from detect.evaluation.fit_diagnosis import FitDiagnosis, side_by_side
from detect.utils.checkpoint import load_checkpoint
from detector_setup import tiny_config


def test_low_training_map_after_half_the_run_is_called_not_fitting():
    check = FitDiagnosis(min_train_map=0.3, after_fraction=0.5)
    message = check.check(step=600, total_steps=1200, train_map=0.04, val_map=0.06)
    assert message and "not fitting its own training images" in message and "0.040" in message
    assert "train.lr" in message and "detect propose" in message  # says what to try


def test_no_verdict_early_in_the_run_or_when_fitting():
    check = FitDiagnosis(min_train_map=0.3, after_fraction=0.5)
    assert check.check(step=599, total_steps=1200, train_map=0.01) is None  # too early to judge
    assert check.check(step=1200, total_steps=1200, train_map=0.85, val_map=0.75) is None
    assert check.check(step=1200, total_steps=1200, train_map=0.30, val_map=0.28) is None  # at the threshold


def test_large_train_val_gap_at_the_end_is_called_memorising():
    check = FitDiagnosis(overfit_gap=0.35)
    assert "memorises" in check.check(step=1200, total_steps=1200, train_map=0.95, val_map=0.40)
    assert check.check(step=600, total_steps=1200, train_map=0.95, val_map=0.40) is None  # judged at the end only


def test_side_by_side_line_names_both_splits():
    assert side_by_side(300, "voc07", 0.61234, 0.5, "test") == "step 300: voc07 mAP train 0.6123 | test 0.5000"
    assert "no validation set" in side_by_side(300, "voc07", 0.6, None)


@pytest.mark.usefixtures("torch_one_thread")
def test_a_run_that_cannot_learn_warns_and_keeps_the_best_checkpoint(tmp_path, capsys):
    config = tiny_config(tmp_path, tmp_path / "cache", data={"val": "shapes:30:0:test"},
                         train={"steps": 2, "lr": 1e-9, "eval_every": 1, "fit_check_images": 6})
    assert cli(["train", "--config", str(config)]) == 0
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert "voc07 mAP train" in text and "not fitting its own training images" in text
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    fit = [r for r in logged if r["split"] == "train_subset"]
    val = [r for r in logged if r["split"] == "val"]
    assert [r["step"] for r in fit] == [1, 2] and [r["step"] for r in val] == [1, 2]
    best = load_checkpoint(tmp_path / "run" / "best.pth")
    assert best["best_map"] == max(r["voc07_mAP"] for r in val)
    assert best["step"] == next(r["step"] for r in val if r["voc07_mAP"] == best["best_map"])
