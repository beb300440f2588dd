"""Compare backbones (or proposers) under one pipeline, then write a Markdown + HTML report.

`detect compare --config BASE.yaml --backbones vgg16,resnet101,googlenet [--checkpoints a.pth,b.pth,c.pth]`
trains (or, with --checkpoints, only evaluates) each backbone with the base config's data, proposals
(one shared cache), schedule and seed, measures each on data.test (VOC07/VOC12/COCO, PR curves,
parameters, GFLOPs, inference time, peak memory, proposal recall) into OUT/results/<name>.json, and
renders OUT/report.md and OUT/report.html. `--proposers selective_search,multibox,combined` compares
proposal methods on one backbone instead. Run it again after an interruption: finished variants are
skipped and a half-trained one resumes.
"""
from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="base detector config (YAML), e.g. configs/compare_bccd_thin.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="base config overrides, e.g. train.steps=100")
    parser.add_argument("--backbones", help="comma-separated backbone names (default vgg16,resnet101,googlenet; "
                                            "with --proposers: one, default the config's model.backbone)")
    parser.add_argument("--proposers", help="comma-separated proposal methods to compare on one backbone, e.g. "
                                            "selective_search,multibox,combined")
    parser.add_argument("--checkpoints", help="comma-separated detector checkpoints, one per variant: evaluate, do not train")
    parser.add_argument("--weights", help="pretrained backbone weights for training: one for all or one per variant, "
                                          "comma-separated (a .pth or 'torchvision')")
    parser.add_argument("--multibox-checkpoint", metavar="PATH",
                        help="MultiBox model (from `detect train-multibox`) for the multibox and combined proposers")
    parser.add_argument("--proposer-param", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="a parameter of one compared proposer (repeatable), e.g. combined.top_m=100")
    parser.add_argument("--out", default="runs/compare", help="output folder (default runs/compare)")
    parser.add_argument("--device", help="auto | cpu | cuda[:i] (overrides train.device)")
    parser.add_argument("--report-only", action="store_true", help="only re-render the report from OUT/results")


def proposer_param_table(items: list[str], multibox_checkpoint: str | None) -> dict[str, dict]:
    """`METHOD.KEY=VALUE` items (and --multibox-checkpoint) -> {method: {key: value}}."""
    from detect.config import parse_override
    from detect.errors import UserError

    table: dict[str, dict] = {}
    if multibox_checkpoint:
        for method in ("multibox", "combined"):
            table.setdefault(method, {})["checkpoint"] = multibox_checkpoint
    for item in items:
        key, value = parse_override(item)
        method, _, name = key.partition(".")
        if not name:
            raise UserError(f"--proposer-param {item!r}: expected METHOD.KEY=VALUE, e.g. combined.top_m=100")
        table.setdefault(method, {})[name] = value
    return table


def main(args) -> int:
    from detect.engine.comparison import load_results, plan_comparison, run_comparison, split_list
    from detect.errors import UserError
    from detect.report.compare_report import render_report

    proposers = split_list(args.proposers)
    default_backbones = "" if proposers else "vgg16,resnet101,googlenet"
    backbones = split_list(args.backbones or default_backbones)
    if proposers and len(backbones) > 1:
        raise UserError("--proposers compares proposal methods on one backbone; give at most one --backbones name")
    overrides = list(args.overrides) + ([f"train.device={args.device}"] if args.device else [])
    variants = plan_comparison(args.config, overrides, args.out, backbones, proposers,
                               split_list(args.checkpoints), split_list(args.weights),
                               proposer_param_table(args.proposer_param, args.multibox_checkpoint))
    if not args.report_only:
        run_comparison(variants, args.out)
    # the report is rendered from the result files on disk, never from numbers held in memory
    markdown, page = render_report(load_results(args.out, [v.name for v in variants]), args.out)
    print(f"report: {page} (self-contained) and {markdown}; results: {args.out}/results/")
    return 0
