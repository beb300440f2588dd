"""List the backbones: parameters, GFLOPs per image, and the detection trunk's stride and channels.

With one name and --weights (a .pth file, or `torchvision` for torchvision's ImageNet weights of the
same architecture), also load those weights strictly, so a weights file can be checked before training.
"""
from __future__ import annotations

import yaml

from detect.errors import UserError


def add_arguments(parser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="backbones to list (default: all)")
    parser.add_argument("--width", type=float, default=1.0, help="channel width multiplier (default 1.0)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)")
    parser.add_argument("--input-size", type=int, default=224, help="image side for the FLOP count (default 224)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="builder option, e.g. shortcut=A for a ResNet or aux_logits=false (repeatable)")
    parser.add_argument("--weights", metavar="PATH|torchvision",
                        help="load these weights into the (single) named backbone, strictly")


def parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--option {pair!r}: expected KEY=VALUE")
        options[key] = yaml.safe_load(value)
    return options


def main(args) -> int:
    import torch

    import backbones

    names = args.names or list(backbones.BUILDERS)
    options = parse_options(args.option)
    if args.weights and len(names) != 1:
        raise UserError("--weights needs exactly one backbone name")
    rows = []
    try:
        for name in names:
            # Without weights, build on the meta device: counting needs shapes only, so this is instant.
            with torch.device("cpu" if args.weights else "meta"):
                model = backbones.build_backbone(name, args.num_classes, args.width, **options)
            if args.weights:
                origin = backbones.load_weights(model, args.weights)
                print(f"loaded {origin} into {name} ({model.arch}): {len(model.state_dict())} tensors, strict")
            parts = model.detection_parts()
            flops = backbones.count_flops(model, args.input_size)
            rows.append((name, f"{backbones.count_parameters(model):,}", f"{flops / 1e9:.2f}", str(parts.stride),
                         str(parts.out_channels), str(parts.num_features)))
    except backbones.BackboneError as err:
        raise UserError(str(err)) from None
    header = ("name", "params", f"GFLOPs@{args.input_size}", "stride", "channels", "features")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    print("GFLOPs: multiply-adds x2 (torch.utils.flop_counter), eval mode, batch 1; stride/channels: the "
          "detection trunk's output; features: the head's output.")
    return 0
