"""Everything a comparison reports about one trained detector, measured in a fresh process.

Accuracy is computed exactly as `detect test` computes it (load_detector -> predict over the cached
proposals of data.test -> evaluate_predictions), so the numbers agree. Speed and memory are taken in
a child process of their own: peak resident memory only ever grows within a process, so a detector
measured after a bigger one would otherwise inherit the bigger one's peak. Children are forked from
a fork server that has only imported the libraries (fast to start, the same baseline for every
variant); where there is no fork server, they are spawned.
"""
from __future__ import annotations

import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import backbones
from detect.data.spec import build_dataset
from detect.engine.detection_config import METRICS, DetectionConfig
from detect.engine.detection_data import ProposalDataset, cached_proposals
from detect.engine.detection_inference import evaluate_predictions, load_detector, predict
from detect.errors import UserError
from detect.evaluation.precision_recall import precision_recall_curves
from detect.evaluation.proposal_recall import proposal_recall
from detect.evaluation.results import write_coco_results
from detect.proposals.cache import proposal_path, read_proposals
from detect.utils.device import resolve_device

MIB = 1024 * 1024
# Imported once by the fork server, so each measuring child starts in a fraction of a second.
PRELOAD = ["detect.engine.detector_measurement", "detect.engine.detection_inference", "detect.engine.detection_data",
           "detect.data.spec", "detect.evaluation.evaluate", "detect.evaluation.coco", "detect.evaluation.proposal_recall",
           "detect.proposals.cache", "detect.proposals.selective_search", "detect.evaluation.precision_recall", "backbones"]


def peak_rss_bytes() -> tuple[int, str]:
    """(this process's peak resident set size so far, where the figure comes from).

    Linux: VmHWM of /proc/self/status, the peak of this process's own address space (ru_maxrss
    survives exec and fork, and would report the parent's peak). Elsewhere: ru_maxrss.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024, "VmHWM (/proc/self/status)"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024), "ru_maxrss (getrusage)"


def backbone_complexity(cfg: DetectionConfig) -> dict:
    """Parameters and GFLOPs of the backbone's 224x224 classification pass, as `detect backbones` lists them."""
    with torch.device("meta"):  # shapes only: instant, no memory
        model = backbones.build_backbone(cfg.model.backbone, width=cfg.model.width, **cfg.model.backbone_options)
    return {"backbone_parameters": backbones.count_parameters(model),
            "backbone_gflops_224": backbones.count_flops(model, 224) / 1e9}


def detector_gflops(model, data, device: torch.device) -> tuple[float, int]:
    """(GFLOPs, proposals) of one test-time forward on the first test image; also warms the model up."""
    image, _, proposals = data[0]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model([image.to(device)], [proposals.to(device)])
    return counter.get_total_flops() / 1e9, int(len(proposals))


def measure_detector(cfg: DetectionConfig, checkpoint: str | Path, detections_path: str | Path | None = None) -> dict:
    """Accuracy (VOC07/VOC12/COCO, PR curves), cost, speed, memory and proposal recall on data.test."""
    if not cfg.data.test:
        raise UserError("data.test: a comparison needs a test set (a dataset spec such as voc:ROOT:test)")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    dataset = build_dataset(cfg.data.test, cfg.data.classes)
    cache_dir = cached_proposals(dataset, cfg.proposals, progress=cfg.train.progress)
    data = ProposalDataset(dataset, cache_dir, cfg.proposals.max_per_image)
    dataset = data.dataset  # less any image the proposal cache found undecodable (counted, logged)
    rss_before_model, _ = peak_rss_bytes()
    model, cfg, classes = load_detector(checkpoint, cfg, dataset.classes, device)
    gflops, flop_proposals = detector_gflops(model, data, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    predictions = predict(model, data, device, cfg.train.amp, cfg.train.progress)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak_rss, rss_source = peak_rss_bytes()
    if detections_path is not None:
        write_coco_results(detections_path, dataset, predictions)
    recall = proposal_recall(dataset, lambda i: read_proposals(proposal_path(cache_dir, dataset.records[i].image_id)))
    curves = precision_recall_curves(dataset, predictions)
    return {
        "test_data": cfg.data.test,
        "num_test_images": len(dataset),
        "classes": list(classes),
        "metrics": evaluate_predictions(dataset, predictions, list(METRICS)),
        "pr_curves": {name: {"recall": r.tolist(), "precision": p.tolist()} for name, (r, p) in curves.items()},
        "complexity": {"detector_parameters": backbones.count_parameters(model), **backbone_complexity(cfg),
                       "detector_gflops_first_test_image": gflops, "proposals_first_test_image": flop_proposals},
        "speed": {"device": str(device), "torch_threads": torch.get_num_threads(), "images": len(dataset),
                  "seconds": seconds, "seconds_per_image": seconds / max(len(dataset), 1),
                  "includes": "image decoding, cached-proposal loading, the detector forward and NMS"},
        "memory": {"peak_rss_source": rss_source, "peak_rss_mib": peak_rss / MIB,
                   "peak_rss_above_runtime_mib": (peak_rss - rss_before_model) / MIB,
                   "gpu_peak_allocated_mib": torch.cuda.max_memory_allocated(device) / MIB
                   if device.type == "cuda" else None},
        "proposal_recall": recall,
        "proposal_cache": str(cache_dir),
    }


def measurement_context():
    """forkserver (preloaded with what measuring imports) where available, else spawn."""
    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    context = get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def measure_detector_in_child(cfg: DetectionConfig, checkpoint: str | Path, detections_path: str | Path | None = None) -> dict:
    """measure_detector in a process of its own, so its peak memory is its own."""
    with ProcessPoolExecutor(1, mp_context=measurement_context()) as pool:
        return pool.submit(measure_detector, cfg, str(checkpoint), detections_path).result()
