"""Print what a dataset holds: images, objects per class, difficult and crowd counts, box sizes, skips."""
from __future__ import annotations

import json


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="dataset spec, e.g. voc:ROOT:trainval or shapes:200:0")
    parser.add_argument("--classes", help="comma-separated class list (default: discovered from the files)")
    parser.add_argument("--check-images", action="store_true", help="decode every image and fail on a missing or corrupt one")
    parser.add_argument("--json", metavar="OUT", help="also write the statistics as JSON")


def main(args) -> int:
    from detect.data.spec import build_dataset
    from detect.data.stats import dataset_statistics, format_statistics
    from detect.engine.checkpoint import atomic_write_bytes

    dataset = build_dataset(args.data, args.classes.split(",") if args.classes else None)
    if args.check_images:
        dataset.check_images()
    stats = dataset_statistics(dataset)
    print(format_statistics(stats))
    if args.check_images:
        print(f"images checked {len(dataset)} decoded, sizes match their annotations")
    if args.json:
        data = json.dumps(stats, indent=2).encode()
        atomic_write_bytes(args.json, lambda fh: fh.write(data))
    return 0
