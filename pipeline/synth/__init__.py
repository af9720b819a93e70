"""The synthetic raw-video benchmark: shapes on textured backgrounds, timed events, queries about them.

``generate_benchmark(out, build_synth_config("quick"), seed=0)`` writes real H.264 videos and
Moment-DETR-style JSONL annotations that the whole pipeline runs on without any download.
"""

from pipeline.synth.benchmark import SynthResult, dataset_stats, generate_benchmark, is_complete
from pipeline.synth.config import PRESETS, SynthConfig, build_synth_config

__all__ = [
    "PRESETS",
    "SynthConfig",
    "SynthResult",
    "build_synth_config",
    "dataset_stats",
    "generate_benchmark",
    "is_complete",
]
