"""`detect <subcommand>`: one entry point, each subcommand in its own module under detect/commands.

Subcommand modules are imported only when chosen, so `detect --help` answers at once and a
subcommand that does not need torch never pays for importing it. Each module defines
`add_arguments(parser)` and `main(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import sys

from detect.errors import UserError
from detect.utils.interrupt import Interrupted

# name -> (module, one-line help). A plain table: what you read here is what gets built.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("detect.commands.demo", "train and evaluate a thin detector on synthetic shapes (CPU, minutes)"),
    "train": ("detect.commands.train", "train a detector (R-CNN or Fast R-CNN mode) from a YAML config"),
    "test": ("detect.commands.test", "evaluate a detector checkpoint: VOC07/VOC12/COCO AP, results JSON, devkit files"),
    "infer": ("detect.commands.infer", "detect objects in images with a checkpoint; draw boxes, write JSON"),
    "export": ("detect.commands.export", "write a detector checkpoint as ONNX or TorchScript (proposals in, scores and boxes out)"),
    "data-stats": ("detect.commands.data_stats", "print statistics of a dataset spec"),
    "convert": ("detect.commands.convert", "convert a dataset (VOC XML) to COCO JSON, or write the synthetic set"),
    "eval": ("detect.commands.eval", "score detections (COCO results JSON) with VOC07 / VOC12 / COCO metrics"),
    "backbones": ("detect.commands.backbones", "list the backbones (params, GFLOPs, feature stride/channels); check a weights file"),
    "propose": ("detect.commands.propose", "compute region proposals for a dataset into a resumable cache; --eval scores their recall"),
    "train-multibox": ("detect.commands.train_multibox", "train a MultiBox proposer (boxes relative to k-means priors) for method multibox / combined"),
    "pretrain": ("detect.commands.pretrain", "pretrain a backbone on an ImageNet-style image folder (papers' recipes), evaluate top-1/top-5"),
    "compare": ("detect.commands.compare", "compare backbones (or proposers) under one pipeline: train or evaluate each, Markdown + HTML report"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detect",
        description="R-CNN-style detection on VGG-16, ResNet-101 and GoogLeNet.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="subcommands:\n" + "\n".join(f"  {name:<16}{help_}" for name, (_, help_) in COMMANDS.items())
        + "\n\n`detect <subcommand> --help` describes each one.",
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="<subcommand>", help="one of the subcommands below")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def subcommand_parser(name: str):
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"detect {name}", description=(module.__doc__ or help_).strip())
    module.add_arguments(parser)
    return module, parser


def main(argv: list[str] | None = None) -> int:
    code = run_command(list(sys.argv[1:] if argv is None else argv))
    if argv is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        leave_torchrun_worker(code)
    return code


def leave_torchrun_worker(code: int) -> None:
    """End a torchrun worker without the interpreter's teardown. At teardown a finished rank was
    sometimes aborted by a C++ thread of torch.distributed (SIGABRT, "terminate called without an
    active exception", ~1 run in 10 on a loaded CPU), and torchrun then failed a run that had
    succeeded. By now every checkpoint and log is written (atomically) and closed; flush and go."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_command(argv: list[str]) -> int:
    top = build_parser()
    if not argv:
        top.print_help()
        return 2
    ns = top.parse_args(argv[:1])
    if "tqdm" not in sys.modules and not sys.stderr.isatty():  # a log file: progress bars redraw once a minute
        os.environ.setdefault("TQDM_MININTERVAL", "60")
    module, parser = subcommand_parser(ns.command)
    args = parser.parse_intermixed_args(argv[1:])  # key=value overrides before, between or after options
    try:
        return int(module.main(args) or 0)
    except Interrupted as stop:  # a signalled stop, checkpoint written: exit 130 (SIGINT) / 143 (SIGTERM)
        if os.environ.get("RANK", "0") == "0":
            again = ["detect", *argv] + ([stop.resume_flag] if stop.resume_flag and stop.resume_flag not in argv else [])
            where = f" at step {stop.step}" if stop.step is not None else ""
            print(f"detect {ns.command}: stopped by {stop.signal_name}{where}; checkpoint {stop.checkpoint}; "
                  f"resume with: {shlex.join(again)}", file=sys.stderr, flush=True)
        return stop.exit_code
    except UserError as err:
        print(f"detect {ns.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only or full output folder, a file where a folder should be: one line
        where = f"{err.filename}: " if err.filename else ""
        print(f"detect {ns.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
