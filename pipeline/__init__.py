"""MKTN feature pipeline: dataset adapters, video decoding, 3D-CNN features, text features."""

from storage.provenance import __version__

__all__ = ["__version__"]
