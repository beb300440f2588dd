"""R-CNN-style object detection on the classic ImageNet backbones."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`from detect import Predictor`, loaded on first use: every module imports this package, and
    the Predictor pulls in torch, the models and the proposals."""
    if name == "Predictor":
        from detect.engine.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'detect' has no attribute {name!r}")
