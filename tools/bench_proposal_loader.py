"""Is the detector's data loader the bottleneck? Training steps/s with the real loader vs the same batches in memory.

`detect train`'s own trainer (DetectionTrainer: its model, optimizer and `run_step`) trains on batches
from its real loader (JPEGs decoded, proposals read from the cache's .npz files, flips and colour
jitter in DataLoader workers) and on the very same batches collected beforehand (`memory`). The two
alternate round by round (the machine may be shared: interleaving spreads any outside load over
both); the first batch of each round is fetched before the clock starts (the trainer's loader starts
its workers once per run, not once per few steps; a round runs on across epoch ends as training does). The ratio of the median rates, real / memory,
should be >= 0.9 (the loader keeps up).

  python tools/bench_proposal_loader.py                                  # configs/bccd_thin_cpu.yaml, 16 BCCD images
  python tools/bench_proposal_loader.py --config configs/voc2007_vgg16_fast.yaml --images 32 --steps 10 train.device=cuda
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch

from detect.config import load_config
from detect.engine.detection_config import DetectionConfig
from detect.engine.detection_trainer import DetectionTrainer

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "bccd_thin_cpu.yaml"))
    p.add_argument("--data", help="training dataset spec (default: the first --images BCCD training images)")
    p.add_argument("--bccd", default=str(REPO.parent / "shared" / "datasets" / "BCCD"))
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--steps", type=int, default=8, help="timed steps per round and mode")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the real loader (data.workers)")
    p.add_argument("--cache", help="proposal cache root (default: a temporary folder, proposals computed first)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    return p.parse_args(argv)


class MemoryBatches:
    """Stands in for the trainer's EpochBatches: hands out batches collected beforehand."""

    def __init__(self, batches: list) -> None:
        self.batches = iter(batches)

    def next(self, trainer):
        return next(self.batches)


class Recording:
    """The real batches, passed through untouched and kept, to check afterwards (untimed) that both
    modes trained on the same data."""

    def __init__(self, batches) -> None:
        self.inner, self.seen = batches, []

    def next(self, trainer):
        batch = self.inner.next(trainer)
        self.seen.append(batch)
        return batch


def same_batches(a: list, b: list) -> bool:
    """(images, targets, proposals) lists equal, tensor by tensor."""
    if len(a) != len(b):
        return False
    for (images, targets, proposals), (images2, targets2, proposals2) in zip(a, b):
        pairs = [*zip(images, images2), *zip(proposals, proposals2),
                 *[(t["boxes"], t2["boxes"]) for t, t2 in zip(targets, targets2)]]
        if len(images) != len(images2) or not all(torch.equal(x, y) for x, y in pairs):
            return False
    return True


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(trainer: DetectionTrainer, steps: int) -> float:
    """steps/s of trainer.run_step over `steps` batches from trainer.batches."""
    synchronize(trainer.device)
    tic = time.perf_counter()
    for _ in range(steps):
        trainer.run_step()
    synchronize(trainer.device)
    return steps / (time.perf_counter() - tic)


def bccd_spec(bccd: Path, count: int, folder: Path) -> str:
    ids = (bccd / "ImageSets" / "Main" / "train.txt").read_text().split()[:count]
    ids_file = folder / f"bccd_train_{len(ids)}.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    return f"voc-dirs:{bccd / 'Annotations'}:{bccd / 'JPEGImages'}:{ids_file}"


def main(argv=None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_loader-") as tmp:
        tmp = Path(tmp)
        # the ids file beside a given cache: the cache is keyed by the dataset spec, so a second run reuses it
        ids_folder = Path(args.cache) if args.cache else tmp
        ids_folder.mkdir(parents=True, exist_ok=True)
        spec = args.data or bccd_spec(Path(args.bccd), args.images, ids_folder)
        cfg = load_config(DetectionConfig, args.config, [
            f"data.train=[{spec}]", "data.val=null", f"data.workers={args.workers}", "train.fit_check_images=0",
            "train.progress=false", f"train.out_dir={tmp / 'run'}", f"proposals.cache_dir={args.cache or tmp / 'proposals'}",
            *args.overrides])
        trainer = DetectionTrainer(cfg)  # computes the proposals the cache lacks
        print(f"{cfg.model.backbone} width {cfg.model.width}, {cfg.model.mode} mode, scales {cfg.model.train_scales}, "
              f"{cfg.train.images_per_batch} images/step, {len(trainer.train_data)} images, {args.workers} loader "
              f"workers, proposals from {trainer.train_data.cache_dir}, device {trainer.device}, "
              f"torch threads {torch.get_num_threads()}", flush=True)

        own = trainer.batches  # the trainer's own kind of batches (StreamBatches: one loader per run)

        def real_batches(epoch: int):
            """The trainer's own batches from `epoch` on, its first one already fetched (workers started).
            With fewer batches in an epoch than --steps + 1 they go on into the next epochs, as in training."""
            batches = copy.copy(own)
            batches.reset()
            trainer.epoch, trainer.epoch_position = epoch, 0
            batches.next(trainer)
            return batches

        trainer.batches = real_batches(0)
        timed_steps(trainer, 1)  # warm-up: allocator, first backward
        real, memory = [], []
        for r in range(args.rounds):
            epoch = 1000 * (r + 1)  # rounds far apart: a small dataset's rounds may span several epochs
            collect = real_batches(epoch)  # the same batches, loaded in advance
            in_memory = [collect.next(trainer) for _ in range(args.steps)]
            collect.reset()
            trainer.batches = recording = Recording(real_batches(epoch))
            real.append(timed_steps(trainer, args.steps))
            recording.inner.reset()
            trainer.batches = MemoryBatches(in_memory)
            memory.append(timed_steps(trainer, args.steps))
            same = same_batches(recording.seen, in_memory)
            print(f"round {r + 1}: real loader {real[-1]:.3f} steps/s, in memory {memory[-1]:.3f} steps/s, "
                  f"ratio {real[-1] / memory[-1]:.3f}; same batches: {'yes' if same else 'NO'}", flush=True)
            if not same:
                raise SystemExit("the real loader and the in-memory copy gave different batches: the comparison is void")
        ratio = statistics.median(real) / statistics.median(memory)
        print(f"median: real loader {statistics.median(real):.3f} steps/s "
              f"({statistics.median(real) * cfg.train.images_per_batch:.2f} images/s), in memory "
              f"{statistics.median(memory):.3f} steps/s; ratio {ratio:.3f} "
              f"(target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})", flush=True)
        return {"real": real, "memory": memory, "ratio": ratio}


if __name__ == "__main__":
    main()
