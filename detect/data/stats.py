"""What is in a dataset: counts per class, difficult/crowd flags, box sizes, skips (`detect data-stats`)."""
from __future__ import annotations

import numpy as np

from detect.data.dataset import DetectionDataset


def dataset_statistics(dataset: DetectionDataset) -> dict:
    boxes = np.concatenate([r.boxes for r in dataset.records]) if dataset.records else np.zeros((0, 4), np.float32)
    labels = np.concatenate([r.labels for r in dataset.records]) if dataset.records else np.zeros(0, np.int64)
    difficult = np.concatenate([r.difficult for r in dataset.records]) if dataset.records else np.zeros(0, bool)
    crowd = np.concatenate([r.iscrowd for r in dataset.records]) if dataset.records else np.zeros(0, bool)
    per_image = np.array([len(r.labels) for r in dataset.records])
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    per_class = {}
    for label, name in enumerate(dataset.classes, start=1):
        mine = labels == label
        per_class[name] = {"objects": int(mine.sum()), "difficult": int(difficult[mine].sum()),
                           "crowd": int(crowd[mine].sum()), "width": summary(widths[mine]),
                           "height": summary(heights[mine])}
    return {
        "name": dataset.name, "images": len(dataset), "classes": list(dataset.classes),
        "objects": int(len(labels)), "difficult": int(difficult.sum()), "crowd": int(crowd.sum()),
        "images_without_objects": int((per_image == 0).sum()) if len(per_image) else 0,
        "objects_per_image": summary(per_image),
        "image_sizes": sorted({f"{r.width}x{r.height}" for r in dataset.records}),
        "box_width": summary(widths), "box_height": summary(heights),
        "box_area_sqrt": summary(np.sqrt(widths * heights)),
        "per_class": per_class, "skips": dict(dataset.skips.counts), "skips_summary": dataset.skips.summary(),
    }


def summary(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"min": None, "median": None, "mean": None, "max": None}
    return {"min": float(values.min()), "median": float(np.median(values)), "mean": float(values.mean()),
            "max": float(values.max())}


def format_statistics(stats: dict) -> str:
    def fmt(s: dict) -> str:
        return "-" if s["min"] is None else f"{s['min']:.0f} / {s['median']:.1f} / {s['mean']:.1f} / {s['max']:.0f}"

    sizes = ", ".join(stats["image_sizes"][:5]) + (" ..." if len(stats["image_sizes"]) > 5 else "")
    lines = [
        f"dataset        {stats['name']}",
        f"images         {stats['images']} ({stats['images_without_objects']} without objects; sizes {sizes})",
        f"objects        {stats['objects']} ({stats['difficult']} difficult, {stats['crowd']} crowd)",
        f"objects/image  min / median / mean / max = {fmt(stats['objects_per_image'])}",
        f"box width      {fmt(stats['box_width'])} px",
        f"box height     {fmt(stats['box_height'])} px",
        f"sqrt(area)     {fmt(stats['box_area_sqrt'])} px",
        "",
        f"{'class':<16}{'objects':>8}{'difficult':>10}{'crowd':>7}  median w x h",
    ]
    for name, c in stats["per_class"].items():
        size = "-" if c["width"]["median"] is None else f"{c['width']['median']:.1f} x {c['height']['median']:.1f}"
        lines.append(f"{name:<16}{c['objects']:>8}{c['difficult']:>10}{c['crowd']:>7}  {size}")
    lines.append("")
    lines.append(f"skips          {stats['skips_summary'] or 'none'}")
    return "\n".join(lines)
