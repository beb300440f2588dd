"""Train a MultiBox proposer (class-agnostic boxes relative to k-means priors) on a detection dataset.

The result, <run.out_dir>/last.pth (best.pth: the best validation recall), is what `method: multibox`
(checkpoint=PATH) and `method: combined` load. `--resume` continues an interrupted run.
"""
from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="YAML file (see configs/multibox_*.yaml)")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda[:i] (overrides run.device)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. optim.epochs=5")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue from CHECKPOINT, or from <run.out_dir>/last.pth when none is given")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective config (after base: and overrides), each key with its meaning, and exit")


def main(args) -> int:
    from detect.config import load_config, print_config
    from detect.engine.multibox_trainer import MultiBoxTrainConfig, train_multibox

    overrides = list(args.overrides) + ([f"run.device={args.device}"] if args.device else [])
    cfg = load_config(MultiBoxTrainConfig, args.config, overrides)
    if args.print_config:
        print_config(cfg, args.config, overrides)
        return 0
    path = train_multibox(cfg, resume=args.resume)
    print(f"MultiBox checkpoint: {path}")
    return 0
