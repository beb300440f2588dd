"""Score detections against a dataset with VOC07, VOC12 or COCO AP; print a per-class table and mAP.

--results is a COCO results JSON ({image_id, category_id, bbox [x,y,w,h] 0-based, score}, image_id
the integer id of `detect convert`'s ground truth (as `detect test` writes it), the dataset's own
string id or the image's file name / stem (as `detect infer` writes it), category_id the COCO category
id or a class name), or a folder of VOC devkit files comp4_det_<split>_<class>.txt (see --devkit-split).
"""
from __future__ import annotations

import json
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="dataset spec of the ground truth, e.g. voc:ROOT:test")
    parser.add_argument("--results", required=True, help="COCO results JSON file, or a folder of devkit result files")
    parser.add_argument("--metric", choices=("voc07", "voc12", "coco"), default="voc07",
                        help="voc07: 11-point AP; voc12: all-point AP (both IoU >= 0.5); coco: AP@[.5:.95] "
                             "(default voc07)")
    parser.add_argument("--use-difficult", action="store_true",
                        help="count difficult objects as ordinary ground truth (default: ignore them, as VOC does)")
    parser.add_argument("--classes", help="comma-separated class list (default: discovered from the files)")
    parser.add_argument("--devkit-split",
                        help="SPLIT in comp4_det_SPLIT_<class>.txt when --results is a folder (default: the split "
                             "`detect test` names for --data: voc:ROOT:SPLIT's SPLIT, a voc-dirs ids file's name, "
                             "else test)")
    parser.add_argument("--json", metavar="OUT", help="also write the numbers as JSON")


def main(args) -> int:
    from detect.data.spec import build_dataset, devkit_split
    from detect.evaluation.evaluate import evaluate, format_table
    from detect.evaluation.results import read_coco_results, read_voc_results
    from detect.utils.files import atomic_write_bytes

    dataset = build_dataset(args.data, args.classes.split(",") if args.classes else None)
    results = Path(args.results)
    if results.is_dir():
        predictions = read_voc_results(results, dataset, args.devkit_split or devkit_split(args.data))
    else:
        predictions = read_coco_results(results, dataset)
    result = evaluate(dataset, predictions, args.metric, use_difficult=args.use_difficult)
    result["results"] = str(results)
    print(format_table(result))
    with_detections = sum(len(p["scores"]) > 0 for p in predictions)
    if with_detections < len(predictions):  # e.g. `detect infer` run on a few of the dataset's images
        print(f"note: {with_detections} of the {len(predictions)} images have detections in {results}; "
              "the objects of the others count as missed")
    if dataset.skips:
        print(f"note: {dataset.skips.summary()}")
        result["skips"] = dict(dataset.skips.counts)
    if args.json:
        data = (json.dumps(result, indent=2) + "\n").encode()
        atomic_write_bytes(args.json, lambda fh: fh.write(data))
        print(f"wrote {args.json}")
    return 0
