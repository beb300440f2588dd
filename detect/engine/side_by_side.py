"""Several test-time variants of a detector run side by side over one dataset, timed fairly.

Why: on a shared CPU the load changes from minute to minute, so variants timed one after the other
compare the load, not the variants. Here each image goes through every variant in turn (the
order rotating from image to image), so a busy minute costs all of them alike. Each variant's
seconds count only its forward pass (soft-max, decoding and NMS included); the images and cached
proposals are read once. Predictions come back in `predict`'s format, ready for `evaluate`.
"""
from __future__ import annotations

import time

import torch

from detect.engine.detection_data import ProposalDataset
from detect.engine.detection_inference import evaluate_predictions
from detect.utils.progress import progress_bar


@torch.no_grad()
def run_side_by_side(models: dict[str, torch.nn.Module], data: ProposalDataset, device: torch.device,
                     progress: bool = True) -> dict[str, dict]:
    """name -> {"predictions": list aligned with data.dataset, "seconds": total forward seconds}."""
    names = list(models)
    out = {name: {"predictions": [], "seconds": 0.0} for name in names}
    for model in models.values():
        model.eval()
    for index in progress_bar(range(len(data)), desc="side by side", disable=not progress, leave=False):
        image, _, proposals = data[index]
        image, proposals = image.to(device), proposals.to(device)
        for name in names[index % len(names):] + names[:index % len(names)]:
            start = time.perf_counter()
            found = models[name]([image], [proposals])[0]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            out[name]["seconds"] += time.perf_counter() - start
            out[name]["predictions"].append({k: v.float().cpu().numpy() if k != "labels" else v.cpu().numpy()
                                             for k, v in found.items()})
    return out


def score_variants(results: dict[str, dict], data: ProposalDataset) -> dict[str, tuple[float, float]]:
    """name -> (VOC07 mAP, seconds per image) for run_side_by_side's results: the benchmarks' one table."""
    return {name: (evaluate_predictions(data.dataset, r["predictions"], ["voc07"])["voc07"]["mAP"],
                   r["seconds"] / len(data)) for name, r in results.items()}
