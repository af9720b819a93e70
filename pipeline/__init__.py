"""MKTN feature pipeline: dataset adapters, video decoding, 3D-CNN features, text features."""

__version__ = "0.1.0"
