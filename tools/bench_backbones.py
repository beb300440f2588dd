"""Forward throughput of our backbones against torchvision's same model, measured in the same run.

Target (issue 3): ours >= 0.97x torchvision's images/s for VGG-16, ResNet-101 and GoogLeNet-BN at batch 8,
224x224, eval mode, no_grad. Both models hold the same weights. Other processes may share the cores, so
each repeat times both models back to back (alternating which goes first) and three estimates of the
ratio are printed: of the median times, of the best times, and the median of the per-repeat ratios
(each repeat's pair shares the machine's load of that moment). For scale, each model's achieved
GFLOP/s is compared with a large matmul's GFLOP/s measured in the same repeats.
`--clock cpu --threads 1` times the process's CPU time instead of wall time: on a loaded machine it
does not count the time other processes hold the core, so it is the steadier comparison there.

    python tools/bench_backbones.py [--repeats 7] [--batch 8] [--size 224] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial

import torch
import torchvision.models as tvm

from backbones import build_backbone, count_flops

TORCHVISION = {
    "vgg16": tvm.vgg16,
    "resnet101": tvm.resnet101,
    "googlenet_bn": partial(tvm.googlenet, init_weights=True),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def seconds(fn, device: torch.device, clock=time.perf_counter) -> float:
    synchronize(device)
    start = clock()
    fn()
    synchronize(device)
    return clock() - start


def matmul_gflops(device: torch.device, n: int, clock) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / seconds(lambda: torch.mm(a, b), device, clock) / 1e9


def bench(name: str, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    reference = TORCHVISION[name](weights=None).to(device).eval()
    ours = build_backbone(name).to(device).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    models = {"ours": ours, "torchvision": reference}
    times: dict[str, list[float]] = {"ours": [], "torchvision": []}
    matmul: list[float] = []
    with torch.no_grad():
        for model in models.values():  # warm-up: allocator, kernels, caches
            model(x)
        for repeat in range(args.repeats):
            order = ["ours", "torchvision"] if repeat % 2 == 0 else ["torchvision", "ours"]
            for key in order:
                times[key].append(seconds(lambda: models[key](x), device, CLOCKS[args.clock]))
            matmul.append(matmul_gflops(device, args.matmul_size, CLOCKS[args.clock]))
    flops = count_flops(ours, args.size, args.batch)
    median = {key: statistics.median(values) for key, values in times.items()}
    pair_ratios = [tv / ours for tv, ours in zip(times["torchvision"], times["ours"])]
    return {
        "model": name,
        "ours_img_s": args.batch / median["ours"],
        "torchvision_img_s": args.batch / median["torchvision"],
        "ratio": median["torchvision"] / median["ours"],
        "ratio_best": min(times["torchvision"]) / min(times["ours"]),
        "ratio_paired": statistics.median(pair_ratios),
        "gflops_per_forward": flops / 1e9,
        "ours_gflop_s": flops / median["ours"] / 1e9,
        "torchvision_gflop_s": flops / median["torchvision"] / 1e9,
        "matmul_gflop_s": statistics.median(matmul),
        "times_ours_s": times["ours"],
        "times_torchvision_s": times["torchvision"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(TORCHVISION), choices=list(TORCHVISION))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--matmul-size", type=int, default=2048, help="side of the square matmul (default 2048)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="wall time, or process CPU time (needs --threads 1 and --device cpu)")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.clock == "cpu" and (args.threads != 1 or device.type != "cpu"):
        parser.error("--clock cpu measures one CPU thread: use it with --threads 1 --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock, "
          f"batch {args.batch}, {args.size}x{args.size}, {args.repeats} interleaved repeats, medians")
    header = f"{'model':<13}{'ours img/s':>11}{'tv img/s':>10}{'ratio':>7}{'best':>7}{'paired':>8}{'GFLOP/fwd':>11}" \
             f"{'ours GFLOP/s':>14}{'matmul GFLOP/s':>16}{'of matmul':>11}"
    print(header)
    results = []
    for name in args.models:
        r = bench(name, args, device)
        results.append(r)
        print(f"{name:<13}{r['ours_img_s']:>11.2f}{r['torchvision_img_s']:>10.2f}{r['ratio']:>7.3f}"
              f"{r['ratio_best']:>7.3f}{r['ratio_paired']:>8.3f}"
              f"{r['gflops_per_forward']:>11.1f}{r['ours_gflop_s']:>14.1f}{r['matmul_gflop_s']:>16.1f}"
              f"{r['ours_gflop_s'] / r['matmul_gflop_s']:>10.0%}", flush=True)
    verdict = "met" if all(r["ratio_paired"] >= 0.97 for r in results) else "NOT met"
    ratios = ", ".join(f"{r['model']} {r['ratio_paired']:.3f}" for r in results)
    print(f"target ours >= 0.97x torchvision (median of paired ratios): {verdict} ({ratios})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
