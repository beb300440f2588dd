"""Pretrain a backbone on an ImageNet-style image folder (the papers' recipes), then evaluate it.

Examples:
  detect pretrain --config configs/pretrain_tiny_cpu.yaml
  detect pretrain --config configs/pretrain_vgg16.yaml data.root=/data/imagenet optim.accumulate=8
  torchrun --nproc_per_node 4 -m detect.cli pretrain --config configs/pretrain_resnet101.yaml
  detect pretrain --config configs/pretrain_vgg16.yaml --resume
  detect pretrain --config configs/pretrain_vgg16.yaml --eval-only --checkpoint a.pth --checkpoint b.pth

After training (and with --eval-only) rank 0 prints top-1/top-5 error under every protocol
(single-scale, multi-scale, dense, multi-crop, dense+multi-crop) per checkpoint and their ensemble.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML recipe, e.g. configs/pretrain_vgg16.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    parser.add_argument("--device", help="auto | cpu | cuda[:i] (overrides run.device)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue from CHECKPOINT, or from <run.out_dir>/last.pth when none is given")
    parser.add_argument("--eval-only", action="store_true", help="evaluate checkpoints instead of training")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="PATH",
                        help="checkpoint(s) to evaluate (repeat for an ensemble); default <run.out_dir>/best.pth")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation table after training")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective config (after base: and overrides), each key with its meaning, and exit")


def main(args: argparse.Namespace) -> int:
    from detect.config import load_config, print_config
    from detect.engine.classification_config import PretrainConfig
    from detect.engine.classification_trainer import BEST_CHECKPOINT, LAST_CHECKPOINT, ClassificationTrainer
    from detect.engine.classifier_evaluation import evaluate_checkpoints
    from detect.utils import distributed as dist_utils
    from detect.utils.device import resolve_device

    overrides = list(args.overrides) + ([f"run.device={args.device}"] if args.device else [])
    cfg = load_config(PretrainConfig, args.config, overrides)
    if args.print_config:
        print_config(cfg, args.config, overrides)
        return 0
    out_dir = Path(cfg.run.out_dir)
    if not args.eval_only:
        try:
            trainer = ClassificationTrainer(cfg, resume=args.resume)
            state = trainer.fit()
            main_process = dist_utils.is_main_process()
        finally:
            dist_utils.shutdown_distributed()
        if state.epoch < cfg.run.epochs or args.no_eval or not main_process:
            return 0
    checkpoints = [Path(p) for p in args.checkpoint] or [
        out_dir / BEST_CHECKPOINT if (out_dir / BEST_CHECKPOINT).is_file() else out_dir / LAST_CHECKPOINT]
    device = resolve_device(cfg.run.device)
    evaluate_checkpoints(cfg, checkpoints, device, out_json=out_dir / "evaluation.json")
    return 0
