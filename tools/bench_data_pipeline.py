"""Is the data pipeline the bottleneck? Training step rate with the real loader vs the same batches in memory.

Trains GoogLeNet (the paper's net, aux heads on, 224 crops) with its recipe's augmentation: JPEG files
on disk decoded and augmented in DataLoader workers (`real`), and the very same batches collected
beforehand and fed from memory (`memory`). The two alternate round by round (the machine may be
shared: interleaving spreads any outside load over both), and the median rates give the ratio
real / memory; the target is >= 0.9 (the loader keeps up).

  python tools/bench_data_pipeline.py                     # synthetic 320x320 JPEG folder in a temp dir
  python tools/bench_data_pipeline.py --root /data/imagenet --steps 20 --batch-size 32 --rounds 5
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import backbones
from detect.data.classification import ImageFolderDataset, collate_skipping_corrupt, write_synthetic_image_folder
from detect.data.classification_transforms import AugmentConfig, build_train_transform
from detect.data.samplers import SeededSampler, init_loader_worker
from detect.engine.classification_trainer import classification_loss


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", help="image folder ROOT/train/<class>/*.jpg (default: a synthetic one)")
    p.add_argument("--model", default="googlenet")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=6, help="timed steps per round and mode")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--image-size", type=int, default=320, help="side of the synthetic JPEGs")
    return p.parse_args()


def timed_steps(model, optimizer, batches) -> float:
    """Train on each batch; returns steps per second."""
    model.train()
    steps, tic = 0, time.perf_counter()
    for batch in batches:
        loss = classification_loss(model(batch.images), batch.labels, 0.3)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    return steps / (time.perf_counter() - tic)


class LoaderSteps:
    """The first `steps` batches of one epoch, fetched as training consumes them (workers run alongside)."""

    def __init__(self, loader, sampler, epoch: int, steps: int) -> None:
        self.loader, self.sampler, self.epoch, self.steps = loader, sampler, epoch, steps

    def __iter__(self):
        self.sampler.set_epoch(self.epoch)
        for i, batch in enumerate(self.loader):
            if i == self.steps:
                return
            yield batch


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else write_synthetic_image_folder(
            Path(tmp) / "images", num_classes=8, train_per_class=args.batch_size * args.steps // 8 + 8,
            val_per_class=1, size=args.image_size, seed=0)
        augment = AugmentConfig(crop="area", crop_size=args.crop, photometric=0.4, pca_std=0.1, normalize="mean_std")
        dataset = ImageFolderDataset(root, "train", build_train_transform(augment))
        sampler = SeededSampler(dataset, seed=0)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True,
                                             num_workers=args.workers, persistent_workers=args.workers > 0,
                                             collate_fn=collate_skipping_corrupt, worker_init_fn=init_loader_worker)
        model = backbones.build_backbone(args.model, num_classes=dataset.num_classes, width=args.width)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        print(f"{args.model} width {args.width} at {args.crop}px, batch {args.batch_size}, {args.workers} workers, "
              f"{len(dataset)} JPEGs in {root}, torch threads {torch.get_num_threads()}")

        timed_steps(model, optimizer, LoaderSteps(loader, sampler, 0, 2))  # warm-up: workers, allocator
        real, memory = [], []
        for r in range(args.rounds):
            batches = LoaderSteps(loader, sampler, r + 1, args.steps)
            in_memory = list(batches)  # the same batches, decoded and augmented in advance
            real.append(timed_steps(model, optimizer, batches))
            memory.append(timed_steps(model, optimizer, in_memory))
            print(f"round {r + 1}: real pipeline {real[-1]:.3f} steps/s, in memory {memory[-1]:.3f} steps/s, "
                  f"ratio {real[-1] / memory[-1]:.3f}", flush=True)
        ratio = statistics.median(real) / statistics.median(memory)
        print(f"median: real {statistics.median(real):.3f} steps/s "
              f"({statistics.median(real) * args.batch_size:.1f} images/s), in memory {statistics.median(memory):.3f} "
              f"steps/s; ratio {ratio:.3f} (target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})")


if __name__ == "__main__":
    main()
