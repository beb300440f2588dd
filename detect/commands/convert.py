"""Write a dataset's ground truth as COCO JSON (--data SPEC --out ann.json), or write the synthetic
shapes set to disk in VOC or COCO layout (--shapes N --seed S --format voc|coco --out DIR)."""
from __future__ import annotations

from detect.errors import UserError


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="dataset spec to convert to COCO JSON, e.g. voc:ROOT:test")
    source.add_argument("--shapes", type=int, metavar="N", help="write N synthetic shapes images")
    parser.add_argument("--out", required=True, help="output JSON file (--data) or folder (--shapes)")
    parser.add_argument("--classes", help="comma-separated class list for --data (default: discovered)")
    parser.add_argument("--difficult-as-crowd", action="store_true",
                        help="write difficult objects as iscrowd=1 so COCOeval ignores them (default: ordinary "
                             "ground truth, flagged difficult=1, ignore=1)")
    parser.add_argument("--seed", type=int, default=0, help="--shapes: random seed (default 0)")
    parser.add_argument("--format", choices=("voc", "coco"), default="voc", help="--shapes: output layout")
    parser.add_argument("--size", type=int, default=128, help="--shapes: image side in pixels (default 128)")


def main(args) -> int:
    if args.shapes is not None:
        from detect.data.shapes import write_shapes

        out = write_shapes(args.out, args.shapes, args.seed, args.format, args.size)
        print(f"wrote {args.shapes} shapes images (seed {args.seed}, {args.size}px) in {args.format} layout to {out}")
        return 0
    if not args.out.endswith(".json"):
        raise UserError(f"--out {args.out}: the COCO annotation file name must end in .json")
    from detect.data.convert import write_coco_json
    from detect.data.spec import build_dataset

    dataset = build_dataset(args.data, args.classes.split(",") if args.classes else None)
    out = write_coco_json(dataset, args.out, difficult_as_crowd=args.difficult_as_crowd)
    objects = sum(len(r.labels) for r in dataset.records)
    print(f"wrote {len(dataset)} images, {objects} objects, {len(dataset.classes)} categories to {out}")
    if dataset.skips:
        print(f"note: {dataset.skips.summary()}")
    return 0
