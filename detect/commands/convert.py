"""Write a dataset's ground truth as COCO JSON (--data SPEC --out ann.json), copy datasets into a VOC,
COCO or YOLO layout (--data SPEC [--data SPEC ...] --format voc|coco|yolo --out DIR, one split per
spec), or write the synthetic shapes set to disk (--shapes N --seed S --format voc|coco|yolo --out DIR)."""
from __future__ import annotations

from detect.errors import UserError


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", action="append",
                        help="dataset spec, e.g. voc:ROOT:test: to COCO JSON, or with --format to a layout (repeat "
                             "for several splits; each spec's split name, e.g. test, names its split)")
    source.add_argument("--shapes", type=int, metavar="N", help="write N synthetic shapes images")
    parser.add_argument("--out", required=True, help="output JSON file (--data) or folder (--shapes)")
    parser.add_argument("--classes", help="comma-separated class list for --data (default: discovered)")
    parser.add_argument("--difficult-as-crowd", action="store_true",
                        help="write difficult objects as iscrowd=1 so COCOeval ignores them (default: ordinary "
                             "ground truth, flagged difficult=1, ignore=1)")
    parser.add_argument("--seed", type=int, default=0, help="--shapes: random seed (default 0)")
    parser.add_argument("--format", choices=("voc", "coco", "yolo"),
                        help="output layout (--shapes default voc; --data without it: one COCO JSON file)")
    parser.add_argument("--size", type=int, default=128, help="--shapes: image side in pixels (default 128)")


def main(args) -> int:
    if args.shapes is not None:
        from detect.data.shapes import write_shapes

        fmt = args.format or "voc"
        out = write_shapes(args.out, args.shapes, args.seed, fmt, args.size)
        print(f"wrote {args.shapes} shapes images (seed {args.seed}, {args.size}px) in {fmt} layout to {out}")
        return 0
    if args.format is not None:
        return write_layout_from_specs(args)
    if len(args.data) > 1:
        raise UserError("--data: one spec for a COCO JSON file; several need --format voc|coco|yolo and a folder")
    if not args.out.endswith(".json"):
        raise UserError(f"--out {args.out}: the COCO annotation file name must end in .json")
    from detect.data.convert import write_coco_json
    from detect.data.spec import build_dataset

    dataset = build_dataset(args.data[0], args.classes.split(",") if args.classes else None)
    out = write_coco_json(dataset, args.out, difficult_as_crowd=args.difficult_as_crowd)
    objects = sum(len(r.labels) for r in dataset.records)
    print(f"wrote {len(dataset)} images, {objects} objects, {len(dataset.classes)} categories to {out}")
    if dataset.skips:
        print(f"note: {dataset.skips.summary()}")
    return 0


def write_layout_from_specs(args) -> int:
    """Each --data spec becomes one split of the layout, named by its split (voc:ROOT:test -> test)."""
    from detect.data.convert import merge_splits, write_layout
    from detect.data.spec import build_dataset, devkit_split
    from detect.utils.files import output_folder

    classes = args.classes.split(",") if args.classes else None
    named = {}
    for spec in args.data:
        split = devkit_split(spec)
        if split in named:
            raise UserError(f"--data {spec}: a second spec for split {split!r} (one spec per split)")
        named[split] = build_dataset(spec, classes)
        classes = classes or named[split].classes
    dataset, splits = merge_splits(named)
    out = write_layout(dataset, output_folder(args.out), splits, args.format)
    counts = ", ".join(f"{split} {len(indices)}" for split, indices in splits.items())
    print(f"wrote {len(dataset)} images ({counts}), {sum(len(r.labels) for r in dataset.records)} objects, "
          f"{len(dataset.classes)} classes in {args.format} layout to {out}")
    difficult = sum(int(r.difficult.sum()) for r in dataset.records)
    if args.format == "yolo" and difficult:
        print(f"note: YOLO has no difficult flag: {difficult} difficult objects were written as ordinary ones")
    for part in named.values():
        if part.skips:
            print(f"note: {part.name}: {part.skips.summary()}")
    return 0
