"""VOC07 / VOC12 AP equal an independent, loop-based transcription of the official devkit.

The reference below follows VOCevaldet.m line by line, in VOC 1-based coordinates read from the XML
files with its own parser (not detect.data): stable sort by -confidence, best overlap over all GT of
the class (difficult included, first on ties), overlap >= 0.5 with the +1 pixel convention,
difficult -> ignored, already-detected -> FP, then MATLAB's 11-point loop or VOCap.m, with MATLAB's
NaN-ignoring max. It runs on BCCD when ../shared has it, on the synthetic shapes otherwise.
"""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from defusedxml import ElementTree
from torchvision.ops import box_iou

from detect.data.dataset import DetectionDataset, ImageRecord
from detect.data.spec import build_dataset
from detect.evaluation.evaluate import evaluate
from detect.evaluation.results import as_numpy_predictions
from detect.evaluation.voc import ELEVEN_RECALL_POINTS, descending_stable_argsort, devkit_overlap

BCCD = Path(__file__).resolve().parents[2] / "shared/datasets/BCCD"

# MATLAB's 0:0.1:1 is built from both ends (a+k*d for the first half, b-k*d for the second).
MATLAB_0_TO_1 = [0.0, 0.1, 0.2, 3 * 0.1, 0.4, 0.5, 1 - 4 * 0.1, 1 - 3 * 0.1, 1 - 2 * 0.1, 1 - 0.1, 1.0]


# ---- the independent reference -------------------------------------------------------------------

def read_voc_ground_truth(root: Path, image_ids: list[str]) -> dict[str, list[dict]]:
    """image id -> objects {name, bbox (VOC 1-based), difficult}, zero-size clicks dropped as the reader does."""
    gt = {}
    for image_id in image_ids:
        objects = []
        for obj in ElementTree.parse(root / "Annotations" / f"{image_id}.xml").getroot().iter("object"):
            bb = [float(obj.find("bndbox").find(tag).text) for tag in ("xmin", "ymin", "xmax", "ymax")]
            if bb[0] == bb[2] or bb[1] == bb[3]:
                continue
            objects.append({"name": obj.find("name").text.strip(), "bbox": bb,
                            "difficult": int(obj.findtext("difficult") or 0) == 1})
        gt[image_id] = objects
    return gt


def devkit_class_ap(gt: dict[str, list[dict]], detections: list[tuple], cls: str, use_07: bool,
                    use_difficult: bool = False) -> float:
    """VOCevaldet.m for one class. detections: (image_id, confidence, xmin, ymin, xmax, ymax) in file order."""
    recs = {}
    npos = 0
    for image_id, objects in gt.items():
        bbs = [o["bbox"] for o in objects if o["name"] == cls]
        diff = [o["difficult"] and not use_difficult for o in objects if o["name"] == cls]
        recs[image_id] = {"BB": bbs, "diff": diff, "det": [False] * len(bbs)}
        npos += sum(not d for d in diff)
    order = sorted(range(len(detections)), key=lambda d: -detections[d][1])  # stable, like MATLAB's sort
    tp = [0] * len(order)
    fp = [0] * len(order)
    for d, k in enumerate(order):
        rec = recs[detections[k][0]]
        bb = detections[k][2:]
        ovmax, jmax = -np.inf, None
        for j, bbgt in enumerate(rec["BB"]):
            bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
            iw = bi[2] - bi[0] + 1
            ih = bi[3] - bi[1] + 1
            if iw > 0 and ih > 0:
                ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1)
                      - iw * ih)
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax, jmax = ov, j
        if ovmax >= 0.5:
            if not rec["diff"][jmax]:
                if not rec["det"][jmax]:
                    tp[d] = 1
                    rec["det"][jmax] = True
                else:
                    fp[d] = 1
        else:
            fp[d] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / npos
    with np.errstate(invalid="ignore"):
        prec = tp / (fp + tp)  # NaN where only ignored detections came so far, as in MATLAB
    if use_07:
        ap = 0.0
        for t in MATLAB_0_TO_1:
            p = [x for x, r in zip(prec, rec) if r >= t and not np.isnan(x)]  # MATLAB's max skips NaN
            ap += (max(p) if p else 0.0) / 11
        return ap
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = mpre[i + 1] if np.isnan(mpre[i]) else max(mpre[i], mpre[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


# ---- randomised detections over real ground truth ------------------------------------------------

@pytest.fixture(scope="module")
def voc_source(tmp_path_factory):
    """(root, split): BCCD when present, else the synthetic shapes written in VOC layout."""
    if BCCD.is_dir():
        return BCCD, "test"
    from detect.data.shapes import write_shapes

    return write_shapes(tmp_path_factory.mktemp("shapes_voc"), 40, 3, "voc"), "test"


def with_difficult(dataset: DetectionDataset, rng: np.random.Generator) -> DetectionDataset:
    """BCCD flags nothing difficult: flip about a fifth of the objects to exercise the rule."""
    records = [replace(r, difficult=rng.random(len(r.labels)) < 0.2) for r in dataset.records]
    return DetectionDataset(records, dataset.classes, name=dataset.name)


def random_detections(dataset: DetectionDataset, rng: np.random.Generator) -> list[dict]:
    """Jittered copies of GT (IoU around 0.5, duplicates), exact half boxes (IoU exactly 0.5), wrong
    classes and background boxes; scores on a coarse grid so ties happen."""
    predictions = []
    for record in dataset.records:
        boxes, labels = [], []
        for box, label in zip(record.boxes, record.labels):
            for _ in range(rng.integers(0, 4)):
                w, h = box[2] - box[0], box[3] - box[1]
                jitter = rng.normal(0, 0.15, 4) * [w, h, w, h]
                boxes.append(box + jitter)
                labels.append(label if rng.random() < 0.85 else rng.integers(1, dataset.num_classes + 1))
            if rng.random() < 0.3:
                half = box.copy()
                half[2] = half[0] + np.floor((box[2] - box[0]) / 2)
                boxes.append(half)
                labels.append(label)
        for _ in range(rng.integers(0, 6)):
            x1, y1 = rng.uniform(0, record.width - 20), rng.uniform(0, record.height - 20)
            boxes.append([x1, y1, x1 + rng.uniform(5, 150), y1 + rng.uniform(5, 150)])
            labels.append(rng.integers(1, dataset.num_classes + 1))
        boxes = np.array(boxes, np.float32).reshape(-1, 4)
        if len(boxes) and rng.random() < 0.5:
            boxes = np.round(boxes)  # integer boxes hit the 0.5 threshold exactly
        predictions.append({"boxes": boxes, "scores": np.round(rng.random(len(boxes)), 2).astype(np.float32),
                            "labels": np.array(labels, np.int64)})
    return predictions


def devkit_detections(dataset: DetectionDataset, predictions: list[dict], label: int) -> list[tuple]:
    """What comp4_det_<split>_<class>.txt would hold, in VOC 1-based coordinates (float64)."""
    rows = []
    for image_id, pred in zip(dataset.image_ids, predictions):
        for box, score, lab in zip(pred["boxes"].astype(np.float64), pred["scores"], pred["labels"]):
            if lab == label:
                rows.append((image_id, float(score), box[0] + 1, box[1] + 1, box[2], box[3]))
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_voc07_and_voc12_equal_the_devkit_on_random_detections(voc_source, seed):
    root, split = voc_source
    rng = np.random.default_rng(seed)
    dataset = with_difficult(build_dataset(f"voc:{root}:{split}"), rng)
    predictions = random_detections(dataset, rng)
    gt = read_voc_ground_truth(root, dataset.image_ids)
    for image_id, record in zip(dataset.image_ids, dataset.records):
        assert len(gt[image_id]) == len(record.labels)
        for obj, hard in zip(gt[image_id], record.difficult):
            obj["difficult"] = bool(hard)
    assert sum(r.difficult.sum() for r in dataset.records) > 0
    for metric in ("voc07", "voc12"):
        for use_difficult in (False, True):
            ours = evaluate(dataset, predictions, metric, use_difficult=use_difficult)
            assert ours["metric"] == metric and ours["use_difficult"] == use_difficult
            expected = {cls: devkit_class_ap(gt, devkit_detections(dataset, predictions, k + 1), cls,
                                             metric == "voc07", use_difficult)
                        for k, cls in enumerate(dataset.classes)}
            for cls in dataset.classes:
                assert ours["ap"][cls] == pytest.approx(expected[cls], abs=1e-6), (metric, use_difficult, cls)
            assert ours["mAP"] == pytest.approx(np.mean(list(expected.values())), abs=1e-6)
            assert 0.05 < ours["mAP"] < 0.95  # the random detections are neither hopeless nor perfect


# ---- hand-computed cases -------------------------------------------------------------------------

def tiny_dataset(images: list[list[tuple]], classes=("a", "b")) -> DetectionDataset:
    """images: per image a list of (x1, y1, x2, y2, label, difficult) in our coordinates."""
    records = []
    for i, objects in enumerate(images):
        table = np.array([o[:4] for o in objects], np.float32).reshape(-1, 4)
        records.append(ImageRecord(f"img{i}", Path(f"img{i}.jpg"), 100, 100, table,
                                   [o[4] for o in objects], [o[5] for o in objects], [False] * len(objects)))
    return DetectionDataset(records, list(classes), name="tiny")


def preds(*per_image: list[tuple]) -> list[dict]:
    """per image a list of (x1, y1, x2, y2, score, label)."""
    out = []
    for rows in per_image:
        table = np.array(rows, np.float64).reshape(-1, 6)
        out.append({"boxes": table[:, :4], "scores": table[:, 4], "labels": table[:, 5].astype(np.int64)})
    return out


TWO_GT = [[(0, 0, 10, 10, 1, False), (5, 0, 15, 10, 1, False)]]


def test_second_detection_on_a_taken_gt_is_a_false_positive_without_fall_back():
    # d2 overlaps GT1 0.667 and GT2 0.538: its best GT is taken, so it is FP, not a match of GT2.
    dets = preds([(0, 0, 10, 10, 0.9, 1), (2, 0, 12, 10, 0.8, 1), (5, 0, 15, 10, 0.7, 1)])
    # TP, FP, TP of 2 positives: recall .5 .5 1, precision 1 .5 2/3.
    assert evaluate(tiny_dataset(TWO_GT), dets, "voc12")["ap"]["a"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert evaluate(tiny_dataset(TWO_GT), dets, "voc07")["ap"]["a"] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_detection_on_difficult_gt_is_ignored_even_if_it_also_overlaps_an_ordinary_one():
    dataset = tiny_dataset([[(0, 0, 10, 10, 1, True), (2, 0, 12, 10, 1, False)]])
    # a: best GT is the difficult one (IoU 1) though it overlaps the other 0.667 -> ignored.
    # b: background -> FP.  c: the ordinary GT -> TP.
    dets = preds([(0, 0, 10, 10, 0.9, 1), (50, 50, 60, 60, 0.8, 1), (2, 0, 12, 10, 0.7, 1)])
    ignored = evaluate(dataset, dets, "voc12")
    assert ignored["ap"]["a"] == pytest.approx(0.5)  # FP then TP of 1 positive
    assert ignored["num_ground_truth"]["a"] == 1 and ignored["num_scored"]["a"] == 2
    assert ignored["difficult"].startswith("difficult objects ignored")
    counted = evaluate(dataset, dets, "voc12", use_difficult=True)
    assert counted["ap"]["a"] == pytest.approx(0.5 + 0.5 * 2 / 3)  # TP, FP, TP of 2 positives
    assert counted["num_ground_truth"]["a"] == 2 and counted["use_difficult"] is True


def test_overlap_of_exactly_one_half_is_a_match():
    dataset = tiny_dataset([[(0, 0, 10, 10, 1, False)]])  # VOC (1,1,10,10), 100 px
    half = preds([(0, 0, 5, 10, 0.9, 1)])  # VOC (1,1,5,10), 50 px inside it: overlap 50/100
    assert evaluate(dataset, half, "voc12")["ap"]["a"] == 1.0
    less = preds([(0, 0, 4.99, 10, 0.9, 1)])
    assert evaluate(dataset, less, "voc12")["ap"]["a"] == 0.0


def test_eleven_point_ap_uses_matlabs_recall_points():
    # 3 of 5 found first: recall exactly 0.6. MATLAB's 0:0.1:1 holds 0.6 itself (numpy's arange holds
    # 0.6000000000000001), so precision 1 counts at t = 0, .1, ..., .6: AP = 7/11, not 6/11.
    gt = [[(10 * k, 0, 10 * k + 8, 8, 1, False) for k in range(5)]]
    dets = preds([(10 * k, 0, 10 * k + 8, 8, 0.9, 1) for k in range(3)] + [(50, 50, 60, 60, 0.1, 1)])
    assert evaluate(tiny_dataset(gt), dets, "voc07")["ap"]["a"] == pytest.approx(7 / 11, abs=1e-12)
    np.testing.assert_array_equal(ELEVEN_RECALL_POINTS, MATLAB_0_TO_1)


def test_equal_scores_keep_input_order_like_matlabs_stable_sort():
    gt = [[], [(0, 0, 10, 10, 1, False)]]
    fp_first = preds([(50, 50, 60, 60, 0.5, 1)], [(0, 0, 10, 10, 0.5, 1)])
    assert evaluate(tiny_dataset(gt), fp_first, "voc12")["ap"]["a"] == pytest.approx(0.5)
    tp_first = preds([], [(0, 0, 10, 10, 0.5, 1), (50, 50, 60, 60, 0.5, 1)])
    assert evaluate(tiny_dataset(gt), tp_first, "voc12")["ap"]["a"] == pytest.approx(1.0)


def test_class_without_ground_truth_has_no_ap_and_stays_out_of_the_mean():
    dataset = tiny_dataset(TWO_GT)  # class "b" has no GT
    dets = preds([(0, 0, 10, 10, 0.9, 1), (0, 0, 10, 10, 0.8, 2)])
    result = evaluate(dataset, dets, "voc07")
    assert result["ap"]["b"] is None
    assert result["mAP"] == result["ap"]["a"] == pytest.approx(6 / 11)  # one TP of 2: recall 0.5, precision 1


def test_no_detections_score_zero():
    result = evaluate(tiny_dataset(TWO_GT), preds([]), "voc12")
    assert result["ap"]["a"] == 0.0 and result["num_detections"] == 0


def test_devkit_overlap_equals_torchvision_box_iou_on_aligned_pairs():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (2, 500, 2))
    a = np.concatenate([xy[0], xy[0] + rng.uniform(0, 30, (500, 2))], axis=1)
    b = np.concatenate([xy[1], xy[1] + rng.uniform(0, 30, (500, 2))], axis=1)
    expected = box_iou(torch.from_numpy(a), torch.from_numpy(b)).diagonal().numpy()
    np.testing.assert_allclose(devkit_overlap(a, b), expected, rtol=1e-12, atol=1e-15)
    assert (expected == 0).any() and (expected > 0.5).any()


def test_predictions_are_checked_against_the_dataset():
    from detect.errors import UserError

    dataset = tiny_dataset(TWO_GT)
    with pytest.raises(UserError, match="2 prediction entries for 1 images"):
        as_numpy_predictions(dataset, preds([], []))
    with pytest.raises(UserError, match=r"predictions\[0\]: label 3 outside 1..2"):
        evaluate(dataset, preds([(0, 0, 1, 1, 0.5, 3)]), "voc07")
    with pytest.raises(UserError, match="unknown metric 'voc10'"):
        evaluate(dataset, preds([]), "voc10")


def test_fast_descending_sort_equals_numpys_stable_argsort():
    rng = np.random.default_rng(0)
    for scores in (rng.random(10_000).astype(np.float32),
                   np.round(rng.normal(0, 3, 10_000), 1).astype(np.float32),  # many ties, negatives
                   np.array([0.0, -0.0, 1, -1, 0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45], np.float32)):
        np.testing.assert_array_equal(descending_stable_argsort(scores), np.argsort(-scores, kind="stable"))


def test_crowd_regions_are_never_counted_and_detections_on_them_are_ignored():
    dataset = tiny_dataset([[(0, 0, 10, 10, 1, False), (50, 50, 90, 90, 1, False)]])
    dataset.records[0].iscrowd[1] = True  # a COCO crowd region, scored with the VOC metric
    dets = preds([(50, 50, 90, 90, 0.9, 1), (0, 0, 10, 10, 0.8, 1)])
    for use_difficult in (False, True):
        result = evaluate(dataset, dets, "voc12", use_difficult=use_difficult)
        assert result["num_ground_truth"]["a"] == 1 and result["num_scored"]["a"] == 1
        assert result["ap"]["a"] == 1.0
