"""Proposal recall, average recall and MABO against hand-computed values; `detect propose --eval`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detect.cli import main as cli_main
from detect.data.dataset import DetectionDataset, ImageRecord
from detect.evaluation.proposal_recall import format_recall_table, proposal_recall
from detect.report.recall_plot import plot_recall_curves

BCCD = Path(__file__).resolve().parents[2] / "shared/datasets/BCCD"


def two_image_dataset() -> DetectionDataset:
    records = [
        ImageRecord("a", Path("a.png"), 100, 100, [[0, 0, 10, 10], [50, 50, 70, 70], [0, 0, 99, 99]], [1, 2, 1],
                    difficult=[False, False, True], iscrowd=[False, False, False]),
        ImageRecord("b", Path("b.png"), 100, 100, [[10, 10, 30, 30]], [2], [False], [False]),
    ]
    return DetectionDataset(records, ["cat", "dog"])


PROPOSALS = {
    # rank 1 misses everything; rank 2 is exact on box 1; rank 3 has IoU 200/400 = 0.5 with box 2
    0: np.array([[80, 0, 100, 20], [0, 0, 10, 10], [50, 50, 60, 70]], np.float32),
    # IoU (15*15) / (400 + 225 - 225) = 0.5625 ... then an exact box at rank 2
    1: np.array([[15, 15, 30, 30], [10, 10, 30, 30]], np.float32),
}


def result_for(top_n=(1, 2, None)):
    return proposal_recall(two_image_dataset(),
                           lambda i: {"boxes": PROPOSALS[i], "scores": np.ones(len(PROPOSALS[i])), "seconds": 0.25 * (i + 1)},
                           top_n=top_n)


def test_recall_counts_covered_ground_truth_over_the_top_n():
    result = result_for()
    assert result["num_gt_boxes"] == 3, "the difficult box is excluded"
    # N=1: only image b's box at IoU 0.5625 (>= 0.5, < 0.7)
    assert result["recall"]["0.5"]["1"] == pytest.approx(1 / 3)
    assert result["recall"]["0.7"]["1"] == 0.0
    # N=2: exact boxes for a/box1 and b; a/box2 still uncovered
    assert result["recall"]["0.5"]["2"] == pytest.approx(2 / 3)
    assert result["recall"]["0.7"]["2"] == pytest.approx(2 / 3)
    # all: a/box2 reaches IoU exactly 0.5
    assert result["recall"]["0.5"]["all"] == pytest.approx(1.0)
    assert result["recall"]["0.7"]["all"] == pytest.approx(2 / 3)


def test_average_recall_and_mabo_by_hand():
    result = result_for()
    # all proposals: best IoUs are 1.0 (cat), 0.5 (dog in a), 1.0 (dog in b)
    # AR over 0.5..0.95: box of IoU 0.5 counts only at 0.5 -> (10*2 + 1) / (10*3)
    assert result["average_recall"]["all"] == pytest.approx(21 / 30)
    assert result["mabo"]["all"] == pytest.approx((1.0 + (0.5 + 1.0) / 2) / 2)
    assert result["abo_per_class"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(0.75)}
    # N=1: cat 0, dog (0 in a, 0.5625 in b)
    assert result["mabo"]["1"] == pytest.approx((0.0 + 0.5625 / 2) / 2)
    assert result["boxes_per_image"] == 2.5 and result["seconds_per_image"] == pytest.approx(0.375)
    assert "difficult" in result["ground_truth_policy"]
    assert "recall@0.5" in format_recall_table(result)


def test_no_proposals_means_zero_recall():
    result = proposal_recall(two_image_dataset(), lambda i: {"boxes": np.zeros((0, 4), np.float32), "seconds": 0.0})
    assert result["recall"]["0.5"]["all"] == 0.0 and result["mabo"]["all"] == 0.0


def test_curve_is_monotone_and_plotted(tmp_path):
    result = result_for(top_n=(1, None))
    curve = result["curve"]
    assert curve["num_proposals"] == sorted(curve["num_proposals"]) and curve["num_proposals"][-1] == 3
    assert all(np.diff(curve["recall@0.5"]) >= 0)
    path = plot_recall_curves({"test": result}, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not BCCD.is_dir(), reason="BCCD not found beside the repository")
def test_propose_command_caches_and_evaluates_bccd(tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("BloodImage_00007\nBloodImage_00012\n")
    data = f"voc-dirs:{BCCD / 'Annotations'}:{BCCD / 'JPEGImages'}:{ids}"
    argv = ["propose", "--data", data, "--param", "strategy=single", "--param", "ks=[100]",
            "--out", str(tmp_path / "cache"), "--workers", "0", "--eval", "--no-progress"]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "recall@0.5" in out and "MABO" in out
    (dataset_dir,) = (tmp_path / "cache").iterdir()  # OUT/<dataset>-<hash>/<method>-<hash>/, as train/test read it
    (cache_dir,) = [p for p in dataset_dir.iterdir() if p.is_dir()]
    result = json.loads((cache_dir / "recall.json").read_text())
    assert result["num_images"] == 2 and result["params"]["ks"] == [100.0]
    assert 0.3 < result["recall"]["0.5"]["all"] <= 1.0 and result["seconds_per_image"] > 0
    assert (cache_dir / "recall.png").stat().st_size > 1000


def test_propose_command_reports_bad_parameters(tmp_path, capsys):
    argv = ["propose", "--data", "shapes:2", "--param", "strategy=fastest", "--out", str(tmp_path)]
    assert cli_main(argv) == 2
    assert "unknown Selective Search strategy 'fastest'" in capsys.readouterr().err
