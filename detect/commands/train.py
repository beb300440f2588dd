"""Train a detector: `detect train --config configs/<dataset>_<backbone>_<mode>.yaml [section.key=value ...]`.

Proposals come from the cache (computed with a progress bar the first time); checkpoints go to
train.out_dir/last.pth (--resume continues from it), metrics to train.out_dir/metrics.jsonl and
TensorBoard; data.val is evaluated every train.eval_every steps and at the end. Under
`torchrun --nproc_per_node N -m detect.cli train ...` it trains with DistributedDataParallel.
"""
from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.steps=500")
    parser.add_argument("--weights", help="start from pretrained backbone weights: a local .pth file "
                                          "(e.g. from `detect pretrain`) or 'torchvision'")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue from train.out_dir/last.pth (or the given checkpoint), same step and schedule")
    parser.add_argument("--device", help="auto | cpu | cuda[:i] (overrides train.device)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective config (after base: and overrides), each key with its meaning, and exit")


def main(args) -> int:
    from detect.config import load_config, print_config
    from detect.engine.detection_config import DetectionConfig
    from detect.engine.detection_trainer import train_detector
    from detect.evaluation.evaluate import format_table
    from detect.utils.distributed import is_main_process

    overrides = list(args.overrides) + ([f"train.device={args.device}"] if args.device else [])
    cfg = load_config(DetectionConfig, args.config, overrides)
    if args.print_config:
        print_config(cfg, args.config, overrides)
        return 0
    results = train_detector(cfg, weights=args.weights, resume=args.resume)
    if is_main_process():
        for metric, result in results.items():
            if metric != "step":
                print("\n" + format_table(result))
        print(f"\ncheckpoint: {cfg.train.out_dir}/last.pth; metrics: {cfg.train.out_dir}/metrics.jsonl")
    return 0
