"""Detection results on disk <-> the in-memory predictions list of docs/architecture.md.

Predictions: `predictions[i] = {"boxes" [M,4] ours, "scores" [M], "labels" [M] in 1..C}` for the
dataset's i-th image (tensors or numpy). Two file formats:

- COCO results JSON: a list of {image_id, category_id, bbox [x,y,w,h] 0-based, score}. We write
  the integer ids of the ground-truth JSON `detect convert` writes for the same dataset
  (`dataset_to_coco_dict`: the COCO image ids of a COCO-sourced dataset, else the image's position in
  the dataset; `dataset.category_ids`), so the file is a standard results file that pycocotools'
  `loadRes` takes against that ground truth. Reading accepts those ints or, entry by entry, the
  dataset's own string image ids (or image file names) and class names (results of older versions,
  `detect infer`).
- VOC devkit result files `comp4_det_<split>_<class>.txt`, one line per detection:
  `image_id score xmin ymin xmax ymax` in VOC 1-based pixels (ours + 1 on the top-left corner).
  Numbers are written with Python's shortest round-trip repr, so files read back bit-exactly.
Malformed results raise UserError naming the file, the entry (or line) and the problem.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from detect.boxes import convert_boxes
from detect.data.dataset import DetectionDataset
from detect.errors import UserError
from detect.utils.files import atomic_write_bytes, file_in

VOC_PREFIX = "comp4_det_"


def as_numpy_predictions(dataset: DetectionDataset, predictions, where: str = "predictions") -> list[dict]:
    """Check predictions against the dataset and return float32/int64 numpy copies."""
    if len(predictions) != len(dataset):
        raise UserError(f"{where}: {len(predictions)} prediction entries for {len(dataset)} images in {dataset.name}")
    out = []
    for i, pred in enumerate(predictions):
        try:
            boxes = _numpy(pred["boxes"], np.float32).reshape(-1, 4)
            scores = _numpy(pred["scores"], np.float32).reshape(-1)
            labels = _numpy(pred["labels"], np.int64).reshape(-1)
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{where}[{i}]: needs 'boxes' [M,4], 'scores' [M] and 'labels' [M] ({err})") from None
        if not len(boxes) == len(scores) == len(labels):
            raise UserError(f"{where}[{i}]: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
        out.append({"boxes": boxes, "scores": scores, "labels": labels})
    if out:  # value checks on everything at once; a failure is traced back to its image
        image = np.repeat(np.arange(len(out)), [len(p["labels"]) for p in out])
        labels = np.concatenate([p["labels"] for p in out])
        bad = np.flatnonzero((labels < 1) | (labels > dataset.num_classes))
        if bad.size:
            raise UserError(f"{where}[{image[bad[0]]}]: label {labels[bad[0]]} outside 1..{dataset.num_classes}")
        finite = np.isfinite(np.concatenate([p["boxes"] for p in out])).all(axis=1)
        finite &= np.isfinite(np.concatenate([p["scores"] for p in out]))
        if not finite.all():
            raise UserError(f"{where}[{image[np.argmin(finite)]}]: boxes and scores must be finite numbers")
    return out


def _numpy(value, dtype) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def empty_predictions(count: int) -> list[dict]:
    return [{"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
             "labels": np.zeros(0, np.int64)} for _ in range(count)]


# ---- COCO results JSON ----------------------------------------------------------------------------

def uses_coco_ids(dataset: DetectionDataset) -> bool:
    return bool(dataset.records) and all(r.coco_image_id is not None for r in dataset.records)


def coco_image_ids(dataset: DetectionDataset) -> list[int]:
    """The integer image id of each record in COCO files: its COCO id when every record has one, else
    its position in the dataset (the rule of `detect convert` / `dataset_to_coco_dict`)."""
    if uses_coco_ids(dataset):
        return [int(r.coco_image_id) for r in dataset.records]
    return list(range(len(dataset.records)))


def predictions_to_coco_results(dataset: DetectionDataset, predictions, image_ids: list | None = None,
                                category_ids: list | None = None) -> list[dict]:
    """COCO results entries, in image order then the predictions' own order.

    `image_ids` / `category_ids` (one per image / class) say what to write; by default the integer
    ids of the dataset's COCO ground truth (`coco_image_ids`, `dataset.category_ids`).
    """
    predictions = as_numpy_predictions(dataset, predictions)
    if image_ids is None:
        image_ids = coco_image_ids(dataset)
    if category_ids is None:
        category_ids = [int(c) for c in dataset.category_ids]
    results = []
    for image_id, pred in zip(image_ids, predictions):
        xywh = convert_boxes(pred["boxes"].astype(np.float64), "xyxy", "xywh")
        for box, score, label in zip(xywh.tolist(), pred["scores"].tolist(), pred["labels"].tolist()):
            results.append({"image_id": image_id, "category_id": category_ids[label - 1], "bbox": box, "score": score})
    return results


def coco_results_to_predictions(dataset: DetectionDataset, results, where: str = "results") -> list[dict]:
    """Inverse of `predictions_to_coco_results`; image ids / categories may be strings or COCO ints."""
    if not isinstance(results, list):
        raise UserError(f"{where}: a COCO results file holds a JSON list of detections, got {type(results).__name__}")
    index_of_name = {}
    for i, record in enumerate(dataset.records):  # file names and stems too (`detect infer` writes stems)
        for name in (Path(str(record.image_path)).stem, Path(str(record.image_path)).name):
            index_of_name.setdefault(name, i)
    index_of_name.update({image_id: i for i, image_id in enumerate(dataset.image_ids)})  # own ids win
    index_of_int = {image_id: i for i, image_id in enumerate(coco_image_ids(dataset))}
    label_of_name = {name: k + 1 for k, name in enumerate(dataset.classes)}
    label_of_int = {int(cid): k + 1 for k, cid in enumerate(dataset.category_ids)}
    per_image: list[list] = [[] for _ in dataset.records]
    for k, entry in enumerate(results):
        at = f"{where}: entry {k}"
        if not isinstance(entry, dict) or not {"image_id", "category_id", "bbox", "score"} <= entry.keys():
            raise UserError(f"{at}: needs image_id, category_id, bbox and score, got {entry!r:.200}")
        index = _lookup(entry["image_id"], index_of_name, index_of_int, at, "image_id", dataset.name)
        label = _lookup(entry["category_id"], label_of_name, label_of_int, at, "category_id", dataset.name)
        x, y, w, h = _bbox(entry["bbox"], at)
        score = entry["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise UserError(f"{at}: score must be a finite number, got {score!r}")
        per_image[index].append((x, y, x + w, y + h, float(score), label))
    return [_from_rows(rows) for rows in per_image]


def _lookup(value, by_name: dict, by_int: dict, at: str, field: str, dataset_name: str) -> int:
    if isinstance(value, str) and value in by_name:
        return by_name[value]
    if isinstance(value, int) and not isinstance(value, bool) and value in by_int:
        return by_int[value]
    kind = "image" if field == "image_id" else "class"
    raise UserError(f"{at}: unknown {kind} {field} {value!r} (not in {dataset_name})")


def _bbox(bbox, at: str) -> tuple[float, float, float, float]:
    ok = (isinstance(bbox, list) and len(bbox) == 4
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox))
    if not ok or bbox[2] < 0 or bbox[3] < 0:
        raise UserError(f"{at}: bad bbox {bbox!r}: expected [x, y, w, h], finite numbers with w, h >= 0")
    return tuple(float(v) for v in bbox)


def _from_rows(rows: list[tuple]) -> dict:
    if not rows:
        return empty_predictions(1)[0]
    table = np.array([row[:5] for row in rows], dtype=np.float64)
    return {"boxes": table[:, :4].astype(np.float32), "scores": table[:, 4].astype(np.float32),
            "labels": np.array([row[5] for row in rows], dtype=np.int64)}


def write_coco_results(path: str | Path, dataset: DetectionDataset, predictions) -> Path:
    """Atomically write the predictions as a COCO results JSON."""
    data = json.dumps(predictions_to_coco_results(dataset, predictions)).encode()
    atomic_write_bytes(path, lambda fh: fh.write(data))
    return Path(path)


def read_coco_results(path: str | Path, dataset: DetectionDataset) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: results file not found")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    return coco_results_to_predictions(dataset, results, where=str(path))


# ---- VOC devkit result files ----------------------------------------------------------------------

def voc_result_path(folder: str | Path, split: str, class_name: str) -> Path:
    return file_in(folder, f"{VOC_PREFIX}{split}_{class_name}.txt")


def check_devkit_image_ids(dataset: DetectionDataset) -> None:
    """Devkit files are whitespace-separated: an image id holding a space cannot be written (check it early)."""
    for image_id in dataset.image_ids:
        if not image_id or any(ch.isspace() for ch in image_id):
            raise UserError(f"image id {image_id!r} of {dataset.name} cannot be written to a devkit file "
                            "(ids are whitespace-separated there)")


def write_voc_results(folder: str | Path, dataset: DetectionDataset, predictions, split: str = "test") -> list[Path]:
    """One devkit file per class (empty when the class has no detections), written atomically."""
    predictions = as_numpy_predictions(dataset, predictions)
    check_devkit_image_ids(dataset)
    lines: list[list[str]] = [[] for _ in dataset.classes]
    for image_id, pred in zip(dataset.image_ids, predictions):
        voc = convert_boxes(pred["boxes"].astype(np.float64), "xyxy", "voc")
        for box, score, label in zip(voc.tolist(), pred["scores"].tolist(), pred["labels"].tolist()):
            lines[label - 1].append(" ".join([image_id, repr(score), *map(repr, box)]) + "\n")
    paths = []
    for class_name, class_lines in zip(dataset.classes, lines):
        path = voc_result_path(folder, split, class_name)
        data = "".join(class_lines).encode()
        atomic_write_bytes(path, lambda fh: fh.write(data))
        paths.append(path)
    return paths


def read_voc_results(folder: str | Path, dataset: DetectionDataset, split: str = "test") -> list[dict]:
    """Read every class's devkit file back into predictions; a missing class file is an error."""
    index_of = {image_id: i for i, image_id in enumerate(dataset.image_ids)}
    per_image: list[list] = [[] for _ in dataset.records]
    for label, class_name in enumerate(dataset.classes, start=1):
        path = voc_result_path(folder, split, class_name)
        if not path.is_file():
            raise UserError(f"{path}: devkit result file for class {class_name!r} not found")
        for line_no, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            at = f"{path}:{line_no}"
            fields = line.split()
            if len(fields) != 6:
                raise UserError(f"{at}: expected 'image_id score xmin ymin xmax ymax', got {line!r:.200}")
            if fields[0] not in index_of:
                raise UserError(f"{at}: unknown image id {fields[0]!r} (not in {dataset.name})")
            try:
                score, *voc = (float(v) for v in fields[1:])
            except ValueError:
                raise UserError(f"{at}: score and box must be numbers, got {line!r:.200}") from None
            if not all(math.isfinite(v) for v in (score, *voc)) or voc[2] < voc[0] - 1 or voc[3] < voc[1] - 1:
                raise UserError(f"{at}: bad box {voc}: expected finite xmin ymin xmax ymax with xmax >= xmin-1, "
                                "ymax >= ymin-1 (VOC 1-based)")
            x1, y1, x2, y2 = convert_boxes(np.array(voc), "voc", "xyxy").reshape(4).tolist()
            per_image[index_of[fields[0]]].append((x1, y1, x2, y2, score, label))
    return [_from_rows(rows) for rows in per_image]
