"""The `width` multiplier: thin versions of the same topology for tests and CPU demos."""
from backbones.errors import BackboneError


def scale_channels(channels: int, width: float) -> int:
    """`channels` scaled by `width`, at least 1 (width 1.0 leaves the paper's numbers untouched)."""
    if width <= 0:
        raise BackboneError(f"width must be positive, got {width}")
    return max(1, round(channels * width))
