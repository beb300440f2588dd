"""Does the toolkit run on a GPU? One command, random weights, no downloads, under 8 minutes on one GPU.

What it runs, one line each with images/s, peak memory and PASS/FAIL:
  backbone   forward + backward (SGD step) of ours and torchvision's VGG-16, ResNet-101 and GoogLeNet
             (ours `googlenet_bn` is torchvision's architecture; ours `googlenet` is the paper's, shown
             beside torchvision's for scale) at 224 px, AMP + channels_last as the trainers use them;
  train      a few AMP training steps of every detector config in configs/ at its own (paper) scale,
             BCCD images standing in for VOC / COCO through overrides (`detect train`'s DetectionTrainer);
  test       the trained detector over the same images (`detect test`'s `predict`: images one by one,
             regions in chunks of model.chunk_size);
  torchrun   `torchrun --nproc_per_node <all GPUs>` running a few detector steps (DDP over nccl).
Images/s of `train` and `torchrun` come from the steps after the first (warm-up) one; peak memory
is torch.cuda.max_memory_allocated of the process (on the CPU: the process's peak resident set).

    tools/gpu_check.sh                       # on a CUDA machine; on one without: says so, runs nothing, exit 0
    python tools/gpu_check.py --dry-run      # the same code on the CPU, tiny sizes, 1 step (tests/test_gpu_check.py)
    python tools/gpu_check.py --configs bccd_vgg16_fast,voc2007_resnet101_rcnn --steps 5

Exit status: 0 when every line passed (or nothing was run for lack of a GPU), 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path

import torch
import torchvision.models as tvm

import backbones
from detect.config import load_config
from detect.data.spec import build_dataset
from detect.engine.classification_trainer import classification_loss
from detect.engine.detection_config import DetectionConfig
from detect.engine.detection_data import ProposalDataset, cached_proposals
from detect.engine.detection_inference import predict
from detect.engine.detection_trainer import DetectionTrainer
from detect.engine.detector_measurement import peak_rss_bytes
from detect.engine.train_loop import HookBase
from detect.errors import ConfigError
from detect.utils import distributed as dist_utils
from detect.utils.device import amp_dtype, autocast, grad_scaler, prepare_images, prepare_model

REPO = Path(__file__).resolve().parent.parent
# (ours, torchvision's): same architecture for the first three; the paper's GoogLeNet has no torchvision twin
BACKBONE_PAIRS = [("vgg16", "vgg16"), ("resnet101", "resnet101"), ("googlenet_bn", "googlenet"), ("googlenet", "googlenet")]
TORCHVISION = {"vgg16": tvm.vgg16, "resnet101": tvm.resnet101, "googlenet": partial(tvm.googlenet, init_weights=True)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true",
                   help="run every check on the CPU with tiny sizes and 1 step (exercises the code paths)")
    p.add_argument("--configs", default="", help="comma-separated config names (default: every detector config)")
    p.add_argument("--backbones", default="", help="comma-separated: vgg16,resnet101,googlenet_bn,googlenet (default: all)")
    p.add_argument("--skip", default="", help="comma-separated sections to skip: backbone,train,test,torchrun")
    p.add_argument("--bccd", default=str(REPO.parent / "shared" / "datasets" / "BCCD"), help="the BCCD folder")
    p.add_argument("--images", type=int, default=None, help="BCCD images used (default 8; dry run 2)")
    p.add_argument("--steps", type=int, default=None, help="detector steps per config (default 4; dry run 1)")
    p.add_argument("--batch", type=int, default=None, help="backbone batch size (default 64; dry run 1)")
    p.add_argument("--budget", type=float, default=450.0, help="seconds; later checks are skipped past it")
    p.add_argument("--work", help="scratch folder (default: a temporary one, deleted at the end)")
    p.add_argument("--ddp-worker", help=argparse.SUPPRESS)  # internal: a torchrun process; the value is a JSON file
    return p.parse_args(argv)


class Report:
    """One line per check; the exit status says whether all passed."""

    def __init__(self, budget: float) -> None:
        self.start = time.perf_counter()
        self.budget = budget
        self.failed = self.passed = self.skipped = 0

    def out_of_time(self) -> bool:
        return time.perf_counter() - self.start > self.budget

    def line(self, section: str, name: str, ok: bool | None, detail: str = "") -> None:
        status = {True: "PASS", False: "FAIL", None: "SKIP"}[ok]
        self.passed += ok is True
        self.failed += ok is False
        self.skipped += ok is None
        print(f"{status}  {section:<9} {name:<30} {detail}", flush=True)

    def run(self, section: str, name: str, check) -> object:
        """Run check() -> (detail, result); a raised error is a FAIL line with its last words."""
        if self.out_of_time():
            self.line(section, name, None, f"time budget ({self.budget:.0f} s) spent")
            return None
        try:
            detail, result = check()
        except Exception as err:  # a check's failure is a line of the report, not the end of the run
            tail = traceback.format_exc().strip().splitlines()[-1]
            self.line(section, name, False, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else tail}"[:300])
            if os.environ.get("GPU_CHECK_TRACEBACK"):
                traceback.print_exc()
            return None
        self.line(section, name, True, detail)
        return result


# ------------------------------------------------------------------------------------------ measuring
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (CUDA)"
    return f"peak {peak_rss_bytes()[0] / 2**30:.2f} GiB (RSS)"


def describe_amp(device: torch.device, amp) -> str:
    dtype = amp_dtype(device, amp)
    return str(dtype).replace("torch.", "") if dtype is not None else "fp32"


class StepTimer(HookBase):
    """Seconds of each training step, the device synchronised at both ends."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def before_step(self) -> None:
        synchronize(self.trainer.device)
        self._start = time.perf_counter()

    def after_step(self) -> None:
        synchronize(self.trainer.device)
        self.seconds.append(time.perf_counter() - self._start)

    def steady(self) -> float:
        """The median step after the first (warm-up); the only step when there is one."""
        return statistics.median(self.seconds[1:] or self.seconds)


# ------------------------------------------------------------------------------------------ backbones
def backbone_check(ours_name: str, tv_name: str, device: torch.device, batch: int, size: int, steps: int,
                   amp: str = "auto", channels_last: bool | str = "auto"):
    """img/s of a training step (forward, backward, SGD) of ours and torchvision's model; the ratio."""
    rates, peaks = {}, {}
    for who in ("ours", "torchvision"):
        torch.manual_seed(0)
        model = (backbones.build_backbone(ours_name) if who == "ours" else TORCHVISION[tv_name](weights=None))
        model = prepare_model(model, device, channels_last).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        scaler = grad_scaler(device, amp)
        images = prepare_images(torch.randn(batch, 3, size, size), device, channels_last)
        labels = torch.randint(0, 1000, (batch,), device=device)
        reset_peak(device)
        times = []
        for _ in range(steps + 1):  # the first is warm-up (cuDNN autotuning, allocator)
            synchronize(device)
            tic = time.perf_counter()
            with autocast(device, amp):
                loss = classification_loss(model(images), labels, 0.3)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            synchronize(device)
            times.append(time.perf_counter() - tic)
            if not torch.isfinite(loss):
                raise RuntimeError(f"{who} {ours_name}: loss {loss.item()}")
        rates[who] = batch / statistics.median(times[1:])
        peaks[who] = peak_memory(device)
        del model, optimizer, images
        if device.type == "cuda":
            torch.cuda.empty_cache()
    detail = (f"ours {rates['ours']:8.1f} img/s, torchvision {tv_name} {rates['torchvision']:8.1f} img/s "
              f"(x{rates['ours'] / rates['torchvision']:.2f}); {peaks['ours']}; batch {batch} at {size}px, "
              f"{describe_amp(device, amp)}")
    return detail, rates


# ------------------------------------------------------------------------------------------ detectors
def detector_configs(names: list[str]) -> list[Path]:
    """Every YAML in configs/ that is a detector config (pretrain / multibox configs do not load as one)."""
    paths = sorted((REPO / "configs").glob("*.yaml"))
    if names:
        by_name = {p.stem: p for p in paths}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise SystemExit(f"gpu_check: no config(s) {missing} in {REPO / 'configs'}")
        paths = [by_name[n] for n in names]
    found = []
    for path in paths:
        try:
            load_config(DetectionConfig, path)
        except ConfigError:
            continue  # a pretrain or multibox config
        found.append(path)
    return found


def data_spec(args, work: Path, count: int) -> str:
    """The first `count` BCCD training images as a voc-dirs spec (an ids file in the scratch folder);
    without BCCD, the synthetic shapes set (small images, upscaled to each config's scale)."""
    bccd = Path(args.bccd)
    split = bccd / "ImageSets" / "Main" / "train.txt"
    if not split.is_file():
        print(f"gpu_check: no BCCD at {bccd} (--bccd): using the synthetic shapes set instead", flush=True)
        return f"shapes:{count}:0"
    ids = split.read_text().split()[:count]
    ids_file = work / f"bccd_{len(ids)}.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    return f"voc-dirs:{bccd / 'Annotations'}:{bccd / 'JPEGImages'}:{ids_file}"


def overrides_for(path: Path, args, spec: str, work: Path, device: torch.device) -> list[str]:
    """The config at its own scale, on the stand-in data, for a few steps, nothing evaluated on the way."""
    base = load_config(DetectionConfig, path)
    box_steps = 1 if base.model.box_training == "separate" else 0
    items = [f"data.train=[{spec}]", "data.val=null", f"data.test={spec}", "data.classes=null",
             f"proposals.cache_dir={work / 'proposals'}", f"proposals.workers={min(8, os.cpu_count() or 1)}",
             f"train.steps={args.steps}", f"train.box_steps={box_steps}", f"train.out_dir={work / 'runs' / path.stem}",
             "train.fit_check_images=0", "train.eval_every=0", "train.checkpoint_every=1000000", "train.log_every=1",
             "train.progress=false", f"train.device={device.type}", "train.threads=null", "train.lr_steps=[1000000]",
             f"data.workers={0 if args.dry_run else 4}"]
    if args.dry_run:  # the same code, tiny: 1/16 width, 64 px images, few proposals
        items += ["model.width=0.0625", "model.train_scales=[64]", "model.test_scale=64", "model.max_size=128",
                  "model.warp_size=32", "model.context_padding=2", "model.chunk_size=64", "proposals.max_per_image=100",
                  "proposals.params={strategy: single, max_side: 128}", "proposals.workers=0",
                  f"train.images_per_batch={min(2, args.images)}", "train.amp=bf16", "train.channels_last=true"]
    return items


def train_check(path: Path, args, spec: str, work: Path, device: torch.device):
    cfg = load_config(DetectionConfig, path, overrides_for(path, args, spec, work, device))
    reset_peak(device)
    trainer = DetectionTrainer(cfg)
    timer = StepTimer()
    trainer.register_hooks([timer])
    trainer.fit()
    if trainer.step != cfg.train.steps + cfg.train.box_steps:
        raise RuntimeError(f"stopped at step {trainer.step}")
    losses = trainer.losses
    if not all(torch.isfinite(torch.tensor(float(v))) for v in losses.values()):
        raise RuntimeError(f"non-finite loss {losses}")
    m = cfg.model
    scale = f"{m.train_scales}/{m.max_size}px" if m.mode == "fast" else f"warp {m.warp_size}px"
    detail = (f"{cfg.train.images_per_batch / timer.steady():8.2f} img/s, {peak_memory(device)}; {m.backbone} "
              f"{m.mode} {scale}, {cfg.train.images_per_batch} img/step, {len(timer.seconds)} steps, "
              f"{describe_amp(device, cfg.train.amp)}, loss {float(losses.get('loss', float('nan'))):.3f}")
    return detail, (trainer, cfg)


def test_check(trainer: DetectionTrainer, cfg: DetectionConfig, device: torch.device):
    """`detect test`'s inference over the images: img/s, peak memory, detections per image."""
    dataset = build_dataset(cfg.data.test, cfg.data.classes)
    data = ProposalDataset(dataset, cached_proposals(dataset, cfg.proposals, progress=False), cfg.proposals.max_per_image)
    model = trainer.model
    predict(model, ProposalDataset(dataset, data.cache_dir, cfg.proposals.max_per_image), device, cfg.train.amp,
            progress=False)  # warm-up
    reset_peak(device)
    tic = time.perf_counter()
    predictions = predict(model, data, device, cfg.train.amp, progress=False)
    synchronize(device)
    seconds = time.perf_counter() - tic
    if len(predictions) != len(data):
        raise RuntimeError(f"{len(predictions)} predictions for {len(data)} images")
    for p in predictions:
        if len(p["boxes"]) and not (torch.isfinite(torch.as_tensor(p["boxes"])).all()
                                    and torch.isfinite(torch.as_tensor(p["scores"])).all()):
            raise RuntimeError("non-finite boxes or scores")
    per_image = sum(len(p["boxes"]) for p in predictions) / max(1, len(predictions))
    detail = (f"{len(data) / seconds:8.2f} img/s, {peak_memory(device)}; {len(data)} images, "
              f"{cfg.proposals.max_per_image} proposals max, chunk {cfg.model.chunk_size}, "
              f"{per_image:.1f} detections/img")
    return detail, None


def torchrun_check(path: Path, args, work: Path, device: torch.device):
    """`torchrun --nproc_per_node N` (N = every GPU; 2 CPU processes over gloo in a dry run) training the config."""
    procs = torch.cuda.device_count() if device.type == "cuda" else 2
    # every process needs whole batches: 2 images per process at least, one image per step
    spec = data_spec(args, work, max(args.images, 2 * procs))
    job = {"config": str(path), "result": str(work / "ddp_result.json"),
           "overrides": overrides_for(path, args, spec, work / "ddp", device) + ["train.images_per_batch=1"]}
    job["overrides"] = [o for o in job["overrides"] if not o.startswith("proposals.cache_dir=")] + [
        f"proposals.cache_dir={work / 'proposals'}"]  # shares the single-process checks' proposals where it can
    job_file = work / "ddp_job.json"
    job_file.write_text(json.dumps(job))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               str(Path(__file__).resolve()), "--ddp-worker", str(job_file)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    if done.returncode != 0:
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        raise RuntimeError(f"torchrun exit {done.returncode}: " + " | ".join(lines[-3:]))
    result = json.loads(Path(job["result"]).read_text())
    detail = (f"{result['images_per_second']:8.2f} img/s, {result['peak']} (rank 0); {result['world']} processes "
              f"({result['backend']}), {path.stem}, {result['steps']} steps")
    return detail, None


def ddp_worker(job_file: str) -> None:
    """One torchrun process: train the job's config; rank 0 writes img/s (all processes) and its peak memory."""
    job = json.loads(Path(job_file).read_text())
    cfg = load_config(DetectionConfig, job["config"], job["overrides"])
    trainer = DetectionTrainer(cfg)
    timer = StepTimer()
    trainer.register_hooks([timer])
    world = dist_utils.world_size()
    backend = torch.distributed.get_backend() if dist_utils.is_distributed() else "none (1 process)"
    try:
        trainer.train()
        result = {"images_per_second": world * cfg.train.images_per_batch / timer.steady(), "world": world,
                  "backend": backend, "steps": trainer.step, "peak": peak_memory(trainer.device)}
        if dist_utils.is_main_process():
            Path(job["result"]).write_text(json.dumps(result))
    finally:
        dist_utils.shutdown_distributed()


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.ddp_worker:
        ddp_worker(args.ddp_worker)
        return 0
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no GPU on this machine (torch.cuda.is_available() is False): nothing was run. "
              "Run it on a CUDA machine, or `python tools/gpu_check.py --dry-run` to exercise the code on the CPU.")
        return 0
    args.images = args.images or (2 if args.dry_run else 8)
    args.steps = args.steps or (1 if args.dry_run else 4)
    args.batch = args.batch or (1 if args.dry_run else 64)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    device = torch.device("cpu") if args.dry_run else torch.device("cuda", 0)
    report = Report(args.budget)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"gpu_check: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
              f"AMP {describe_amp(device, 'auto')}, channels_last, budget {args.budget:.0f} s", flush=True)
    else:
        print(f"gpu_check --dry-run: CPU, tiny sizes, {args.steps} step(s), bf16 autocast + channels_last", flush=True)
    configs = detector_configs([c.strip() for c in args.configs.split(",") if c.strip()])

    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if "backbone" not in skip:
            chosen = {b.strip() for b in args.backbones.split(",") if b.strip()}
            for ours, theirs in [pair for pair in BACKBONE_PAIRS if not chosen or pair[0] in chosen]:
                # the paper's GoogLeNet's auxiliary heads need 224 px; the others run tiny in a dry run
                size = 224 if not args.dry_run or ours == "googlenet" else 64
                settings = ("bf16", True) if args.dry_run else ("auto", "auto")
                report.run("backbone", ours, lambda: backbone_check(ours, theirs, device, args.batch, size,
                                                                   1 if args.dry_run else 10, *settings))
        spec = data_spec(args, work, args.images)
        if "torchrun" not in skip and configs:  # before the long per-config loop, so the budget never skips it
            path = next((p for p in configs if p.stem == "bccd_resnet101_fast"), configs[0])
            report.run("torchrun", path.stem, lambda: torchrun_check(path, args, work, device))
        trained = []
        for path in configs:
            if "train" in skip:
                break
            result = report.run("train", path.stem, lambda: train_check(path, args, spec, work, device))
            if result is not None:
                trainer, cfg = result
                if "test" not in skip:
                    report.run("test", path.stem, lambda: test_check(trainer, cfg, device))
                trained.append(path)
                del trainer, result
            shutil.rmtree(work / "runs" / path.stem, ignore_errors=True)  # a VGG-16 run's last.pth is ~1 GB
            if device.type == "cuda":
                torch.cuda.empty_cache()
    elapsed = time.perf_counter() - report.start
    print(f"gpu_check: {report.passed} passed, {report.failed} failed, {report.skipped} skipped in {elapsed:.0f} s",
          flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
