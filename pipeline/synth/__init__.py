"""The synthetic raw-video benchmark: timed events in rendered scenes, and queries about them.

``generate_benchmark(out, build_synth_config("quick"), seed=0)`` writes real H.264 videos and
Moment-DETR-style JSONL annotations that the whole pipeline runs on without any download.
Two domains (``pipeline.synth.domains``): ``shapes`` (coloured shapes on textured backgrounds)
and ``street`` (a top-down street scene with small vehicles, pedestrians and dogs):
``build_synth_config("quick", "street")``.
"""

from pipeline.synth.benchmark import (
    SynthResult,
    dataset_stats,
    generate_benchmark,
    is_complete,
    write_annotations_only,
)
from pipeline.synth.config import DOMAINS, PRESETS, SynthConfig, build_synth_config

__all__ = [
    "DOMAINS",
    "PRESETS",
    "SynthConfig",
    "SynthResult",
    "build_synth_config",
    "dataset_stats",
    "generate_benchmark",
    "write_annotations_only",
    "is_complete",
]
