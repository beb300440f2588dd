"""R-CNN-style object detection on the classic ImageNet backbones."""

__version__ = "0.1.0"
