"""Print what a dataset holds: images, objects per class, difficult and crowd counts, box sizes, skips."""
from __future__ import annotations

import json


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="dataset spec, e.g. voc:ROOT:trainval or shapes:200:0")
    parser.add_argument("--classes", help="comma-separated class list (default: discovered from the files)")
    parser.add_argument("--check-images", action="store_true",
                        help="decode every image; report damaged ones (truncated, decoded in part) and unusable ones "
                             "(missing, undecodable, size unlike the annotation), exit status 1 if any is unusable")
    parser.add_argument("--json", metavar="OUT", help="also write the statistics as JSON")


def main(args) -> int:
    from detect.data.spec import build_dataset
    from detect.data.stats import dataset_statistics, format_statistics
    from detect.utils.files import atomic_write_bytes

    dataset = build_dataset(args.data, args.classes.split(",") if args.classes else None)
    report = dataset.image_report() if args.check_images else None
    stats = dataset_statistics(dataset)
    print(format_statistics(stats))
    if report is not None:
        stats["images_checked"] = {"decoded": report["decoded"], "damaged": report["damaged"],
                                   "unreadable": report["unreadable"]}
        if not report["damaged"] and not report["unreadable"]:
            print(f"images checked {len(dataset)} decoded, sizes match their annotations")
        else:
            print(f"images checked {report['decoded']} of {len(dataset)} decoded ({len(report['damaged'])} damaged, "
                  f"decoded in part), {len(report['unreadable'])} unusable (skipped by training and proposals "
                  "unless data.strict_images)")
            for path in report["damaged"]:
                print(f"  damaged: {path}")
            for message in report["unreadable"]:
                print(f"  unusable: {message}")
    if args.json:
        data = json.dumps(stats, indent=2).encode()
        atomic_write_bytes(args.json, lambda fh: fh.write(data))
    return 1 if report is not None and report["unreadable"] else 0
