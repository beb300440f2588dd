"""Is the detector learning? Training-set and validation mAP side by side, and a plain verdict.

A detector that cannot fit its own training images will not detect anything on new ones, and the
loss curve alone does not show it (a classifier loss that sits near the entropy of the label prior
looks like a slowly falling curve). So at each evaluation the trainer also scores a fixed subset of
training images; once `after_fraction` of the schedule has passed and the training mAP is still
below `min_train_map`, the verdict says so, with the likely causes in the order worth checking.
"""
from __future__ import annotations

from dataclasses import dataclass

NOT_FITTING_CAUSES = (
    "the learning rate (train.lr) is too low or too high for this batch size: try x3 up and down",
    "the schedule is too short (train.steps) for the number of training images",
    "the proposals miss the objects: check their recall with `detect propose --data SPEC --eval`",
    "the objects are small at model.train_scales: raise the scale so they span several feature cells",
    "wrong annotations or class list: check `detect data-stats --data SPEC`",
)


@dataclass
class FitDiagnosis:
    """`check(step, total_steps, train_map, val_map)` -> a warning text, or None when all is well."""

    min_train_map: float = 0.3  # below this training mAP (after after_fraction of the run) = not fitting
    after_fraction: float = 0.5  # judge only once this fraction of the schedule has passed
    overfit_gap: float = 0.35  # train mAP this far above val mAP at the end = overfitting, said once

    def not_fitting(self, step: int, total_steps: int, train_map: float) -> bool:
        return step >= self.after_fraction * total_steps and train_map < self.min_train_map

    def check(self, step: int, total_steps: int, train_map: float, val_map: float | None = None) -> str | None:
        if self.not_fitting(step, total_steps, train_map):
            causes = "\n".join(f"  - {cause}" for cause in NOT_FITTING_CAUSES)
            return (f"WARNING: the detector is not fitting its own training images: training mAP "
                    f"{train_map:.3f} < {self.min_train_map} after {step}/{total_steps} steps. "
                    f"It will not do better on new images. Likely causes, most likely first:\n{causes}")
        if step >= total_steps and val_map is not None and train_map - val_map > self.overfit_gap:
            return (f"note: training mAP {train_map:.3f} is far above validation mAP {val_map:.3f}: the "
                    f"detector memorises its training images; more data, more augmentation "
                    f"(model.train_scales jitter) or fewer steps may help")
        return None


def side_by_side(step: int, metric: str, train_map: float, val_map: float | None, val_name: str = "val") -> str:
    """One log line: training and validation mAP of the same evaluation."""
    val = f"{val_name} {val_map:.4f}" if val_map is not None else "no validation set"
    return f"step {step}: {metric} mAP train {train_map:.4f} | {val}"
