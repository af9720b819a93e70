"""Checkpoints: written atomically, loadable with ``torch.load(weights_only=True)``.

A checkpoint holds what ``--resume`` needs to continue exactly (model, optimizer,
scheduler, the python/numpy/torch/CUDA RNG states, epoch, step) and what
inference on a new video needs (the config, the input widths, the feature
normalisation statistics, and the provenance of the features and queries: the
extractor settings and text-encoder files recorded by the stores).
Everything is tensors, numbers, strings, lists and dicts, so loading never
unpickles arbitrary objects.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.provenance import code_version, source_digest
from storage.atomic import atomic_write_bytes

FORMAT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as weights-only-loadable values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus format version, code version, source digest) atomically."""
    payload = dict(payload)
    payload.setdefault("format_version", FORMAT_VERSION)
    payload.setdefault("code_version", code_version())
    payload.setdefault("source_digest", source_digest())
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint; clear errors for a missing, truncated or foreign file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist; train one with `mktn train --out DIR` "
                                "(it writes DIR/best.pt and DIR/last.pt)")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"checkpoint {str(p)!r} cannot be read ({exc}); it is not an MKTN checkpoint "
                         "or it is damaged: retrain, or pass another file") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"checkpoint {str(p)!r} is not an MKTN checkpoint (no 'model'/'config' entries)")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"checkpoint {str(p)!r} has format {ckpt['format_version']}, newer than this code "
                         f"({FORMAT_VERSION}); upgrade mktn")
    return ckpt


# Model keys added before ``model.config.ADDED_KEYS`` existed, with what the code did without
# them: CSM read the annotation order, no patch attention, no highlighting, the span head
_EARLIER_KEYS: dict[str, Any] = {
    "model.query_order": "annotation",
    "model.patch_attention": False,
    "model.highlight": False,
    "model.head": "span",
}


def config_with_defaults_of_its_time(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config dict with the keys added since it was written set to what that code did
    (``_EARLIER_KEYS``, then ``model.config.ADDED_KEYS``: ``model.word_pooling``,
    ``model.map_evidence``, ``train.splice`` ...). Sections it lacks stay absent, except
    ``model``."""
    from model.config import ADDED_KEYS

    out = {**config, "model": dict(config.get("model", {}))}
    for key, old_value in {**_EARLIER_KEYS, **ADDED_KEYS}.items():
        section, name = key.split(".")
        if section in out and name not in out[section]:
            out[section] = {**out[section], name: old_value}
    return out


def model_from_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[
        torch.nn.Module, dict[str, Any], Any, Any]:
    """-> (network in eval mode on ``device``, raw checkpoint, ``MKTNConfig``, ``NormStats``)."""
    from model.config import MKTNConfig
    from model.data import NormStats
    from model.mktn import build_model

    ckpt = load_checkpoint(path, map_location="cpu")
    cfg = MKTNConfig.from_dict(config_with_defaults_of_its_time(ckpt["config"]))
    dims = ckpt["dims"]
    model = build_model(cfg.model, dims["frame"], dims["patch"], dims["word"], dims["sentence"])
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, ckpt, cfg, NormStats.from_dict(ckpt["norm"])
