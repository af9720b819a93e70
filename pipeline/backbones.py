"""3D-CNN backbones that turn a clip into a global clip feature and P patch features.

Registry (``BACKBONES``), each a real architecture built without downloading anything:

- ``c3d``: Tran et al. 2015, "Learning Spatiotemporal Features with 3D Convolutional
  Networks": 8 convolutions conv1a..conv5b (3x3x3), pool1..pool5, fc6/fc7 (4096-d) and
  fc8 (Sports-1M, 487 classes); 16-frame 112x112 clips. Parameter names follow the
  original Sports-1M release (``conv1a.weight`` ... ``fc8.bias``); the names of the
  popular PyTorch port (``conv1.weight``, ``conv2.weight``) are accepted when loading.
- ``r2plus1d_18``, ``r3d_18``, ``mc3_18``, ``s3d``: torchvision's video models, built
  with ``weights=None``.
- ``tiny3d``: a small, fast 4-stage 3D-CNN for the CPU demo (see docs/features.md).

A :class:`ClipFeatureExtractor` runs a backbone up to a chosen layer (the last
convolutional stage by default), averages the map over time, pools it adaptively to a
``grid x grid`` spatial grid (P = grid**2 patches) and global-average-pools it for the
clip feature, so clip and patch features share one dimension D (the layer's channels).
Layers after the chosen one are never run.

Weights only come from a local file the caller names (:func:`load_weights`); without
one, the backbone is seeded random init, deterministic for a seed, and
:func:`weights_tag` says which, for the store's provenance.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.descriptors import DESCRIPTORS, ClassicalDescriptors
from storage.fingerprint import file_digest

log = logging.getLogger(__name__)

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


class WeightsError(ValueError):
    """A weights file does not fit the backbone; the message lists the offending keys."""


# --- C3D ----------------------------------------------------------------------------------


class C3D(nn.Module):
    """C3D (Tran et al. 2015) with the Sports-1M parameter names.

    Input [B, 3, 16, 112, 112]; ``forward`` returns fc8 logits [B, num_classes].
    ``stages`` lists the feature-extraction stages by name: ``conv1`` .. ``conv5``
    (each convolution block up to, not including, its pooling) and ``fc7``.
    """

    def __init__(self, num_classes: int = 487) -> None:
        super().__init__()

        def conv(cin: int, cout: int) -> nn.Conv3d:
            return nn.Conv3d(cin, cout, kernel_size=3, padding=1)

        self.conv1a = conv(3, 64)
        self.pool1 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.conv2a = conv(64, 128)
        self.pool2 = nn.MaxPool3d(kernel_size=2, stride=2)
        self.conv3a = conv(128, 256)
        self.conv3b = conv(256, 256)
        self.pool3 = nn.MaxPool3d(kernel_size=2, stride=2)
        self.conv4a = conv(256, 512)
        self.conv4b = conv(512, 512)
        self.pool4 = nn.MaxPool3d(kernel_size=2, stride=2)
        self.conv5a = conv(512, 512)
        self.conv5b = conv(512, 512)
        self.pool5 = nn.MaxPool3d(kernel_size=2, stride=2, padding=(0, 1, 1))
        self.fc6 = nn.Linear(8192, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(p=0.5)

    def stage_modules(self) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
        r = self.relu
        return [
            ("conv1", lambda x: r(self.conv1a(x))),
            ("conv2", lambda x: r(self.conv2a(self.pool1(x)))),
            ("conv3", lambda x: r(self.conv3b(r(self.conv3a(self.pool2(x)))))),
            ("conv4", lambda x: r(self.conv4b(r(self.conv4a(self.pool3(x)))))),
            ("conv5", lambda x: r(self.conv5b(r(self.conv5a(self.pool4(x)))))),
        ]

    def fc7_features(self, conv5: torch.Tensor) -> torch.Tensor:
        """fc7 activations [B, 4096] from the conv5 map [B, 512, 2, 7, 7]."""
        x = self.pool5(conv5).flatten(1)  # (B, 8192)
        x = self.dropout(self.relu(self.fc6(x)))
        return self.dropout(self.relu(self.fc7(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, fn in self.stage_modules():
            x = fn(x)
        return self.fc8(self.fc7_features(x))


# Names used by the widely copied PyTorch port of the Sports-1M weights (c3d.pickle).
C3D_PORT_ALIASES = {"conv1.": "conv1a.", "conv2.": "conv2a."}


# --- tiny3d -------------------------------------------------------------------------------


class TemporalDifference(nn.Module):
    """Appends ``gain`` x the difference to the previous frame to the RGB channels (TSN's RGB-diff).

    [B, 3, L, H, W] -> [B, 6, L, H, W]; the first frame's difference is zero. Random-init
    3D convolutions respond weakly to motion in raw RGB; the explicit difference makes where
    and how things move visible to them (measured in docs/features.md).
    """

    def __init__(self, gain: float = 3.0) -> None:
        super().__init__()
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, 1:] - x[:, :, :-1]], dim=2)
        return torch.cat([x, self.gain * diff], dim=1)  # (B, 6, L, H, W)


class Tiny3D(nn.Module):
    """A small 3D-CNN for CPU extraction: RGB + temporal difference, a 3x5x5 stem, three 3x3x3 stages.

    Channels 32-64-128-256, each conv followed by BatchNorm and ReLU. On a
    [B, 3, 8, 112, 112] clip the stages give maps of 56, 28, 14 and 7 pixels
    (8, 4, 2, 2 frames).
    """

    def __init__(self, width: int = 32, motion_gain: float = 3.0) -> None:
        super().__init__()

        def block(
            cin: int, cout: int, k: tuple[int, int, int], s: tuple[int, int, int]
        ) -> list[nn.Module]:
            pad = (k[0] // 2, k[1] // 2, k[2] // 2)
            return [
                nn.Conv3d(cin, cout, k, stride=s, padding=pad, bias=False),
                nn.BatchNorm3d(cout),
                nn.ReLU(inplace=True),
            ]

        self.stem = nn.Sequential(
            TemporalDifference(motion_gain), *block(6, width, (3, 5, 5), (1, 2, 2))
        )
        self.layer1 = nn.Sequential(*block(width, 2 * width, (3, 3, 3), (2, 2, 2)))
        self.layer2 = nn.Sequential(*block(2 * width, 4 * width, (3, 3, 3), (2, 2, 2)))
        self.layer3 = nn.Sequential(*block(4 * width, 8 * width, (3, 3, 3), (1, 2, 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.layer2(self.layer1(self.stem(x))))


# --- registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone needs and offers.

    ``layers``: stage names in order with their channel counts; ``default_layer``:
    the stage features come from by default; ``clip_len``/``crop``/``resize``: the input
    it was designed for; ``mean``/``std``/``scale``: pixel normalisation
    ``(x / 255 * scale - mean) / std`` per RGB channel.
    """

    name: str
    build: Callable[[], nn.Module]
    layers: Sequence[tuple[str, int]]
    default_layer: str
    clip_len: int = 16
    resize: int = 128
    crop: int = 112
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    scale: float = 1.0
    aliases: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def channels(self, layer: str) -> int:
        """Feature dimension of ``layer``; ``"a+b"`` concatenates layers (channels add up).

        Besides the network's own stages, every backbone offers the classical descriptors of
        :mod:`pipeline.descriptors` (``colour``, ``motion``, ``shape``) as extra layers.
        """
        known = {**dict(self.layers), **DESCRIPTORS}
        total = 0
        parts = layer.split("+")
        if len(set(parts)) != len(parts):
            raise ValueError(f"layer {layer!r} names a layer twice")
        for part in parts:
            if part not in known:
                raise ValueError(
                    f"backbone {self.name!r} has no layer {part!r}; choose one of "
                    f"{list(known)} (or several joined by '+')"
                )
            total += known[part]
        return total


def _tv(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision.models.video as tvv

        return getattr(tvv, name)(weights=None)

    return build


_RESNET_LAYERS = (("stem", 64), ("layer1", 64), ("layer2", 128), ("layer3", 256), ("layer4", 512))
# S3D's ``features`` Sequential: index -> output channels.
_S3D_LAYERS = tuple(
    (f"features.{i}", c)
    for i, c in enumerate(
        (64, 64, 64, 192, 192, 256, 480, 480, 512, 512, 512, 528, 832, 832, 832, 1024)
    )
)

BACKBONES: dict[str, BackboneSpec] = {
    "c3d": BackboneSpec(
        "c3d",
        C3D,
        layers=(("conv1", 64), ("conv2", 128), ("conv3", 256), ("conv4", 512), ("conv5", 512)),
        default_layer="conv5",
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        scale=255.0,
        aliases=C3D_PORT_ALIASES,
        description="C3D, Tran et al. 2015 (Sports-1M layout), RGB in [0, 255] as the PyTorch port",
    ),
    "r2plus1d_18": BackboneSpec(
        "r2plus1d_18",
        _tv("r2plus1d_18"),
        _RESNET_LAYERS,
        "layer4",
        description="torchvision R(2+1)D-18",
    ),
    "r3d_18": BackboneSpec(
        "r3d_18", _tv("r3d_18"), _RESNET_LAYERS, "layer4", description="torchvision R3D-18"
    ),
    "mc3_18": BackboneSpec(
        "mc3_18", _tv("mc3_18"), _RESNET_LAYERS, "layer4", description="torchvision MC3-18"
    ),
    "s3d": BackboneSpec(
        "s3d", _tv("s3d"), _S3D_LAYERS, "features.15", resize=128, description="torchvision S3D"
    ),
    "tiny3d": BackboneSpec(
        "tiny3d",
        Tiny3D,
        layers=(("stem", 32), ("layer1", 64), ("layer2", 128), ("layer3", 256)),
        # 384-d network channels + 85-d classical descriptors (docs/features.md)
        default_layer="layer2+layer3+colour+motion+shape+objects",
        clip_len=8,
        description="small 4-stage 3D-CNN for the CPU demo",
    ),
    "classic": BackboneSpec(
        "classic",
        nn.Module,  # no network: only the classical descriptors of pipeline/descriptors.py
        layers=(),
        default_layer="colour+motion+shape+objects",  # 85-d; the CPU default (docs/features.md)
        clip_len=8,
        description="no network: classical colour, motion, shape and foreground-object descriptors (CPU default)",
    ),
}


def get_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None


def _stages(name: str, net: nn.Module) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    if isinstance(net, C3D):
        return net.stage_modules()
    if name == "s3d":
        feats = net.features
        assert isinstance(feats, nn.Sequential)
        return [(f"features.{i}", m) for i, m in enumerate(feats)]
    # torchvision VideoResNet and Tiny3D share stem/layer1..layerN naming
    return [(n, getattr(net, n)) for n, _ in get_spec(name).layers]


# --- weights ------------------------------------------------------------------------------


def _as_state_dict(obj: Any, path: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{path}: not a state dict (got {type(obj).__name__})")
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            raise WeightsError(f"{path}: state dict key {k!r} is not a string")
        key = k[len("module.") :] if k.startswith("module.") else k
        try:
            out[key] = torch.as_tensor(v)
        except Exception as exc:
            raise WeightsError(f"{path}: value of {k!r} is not an array: {exc}") from exc
    return out


def _accepted() -> str:
    import importlib.util

    st = ", .safetensors" if importlib.util.find_spec("safetensors") else ""
    return (
        "accepted: torch.save files (.pt/.pth, read with torch.load(weights_only=True)), "
        f"protocol-2 pickles of tensors/numpy arrays, .npz without object arrays{st}"
    )


def _numpy_safe_globals() -> list[Any]:
    """The numpy reconstructors a pickle of plain arrays needs (no code, only data).

    They are allowlisted for torch's weights-only unpickler under both their numpy 2 and
    numpy 1 / Python 2 names, so the C3D Sports-1M conversions (dicts of numpy arrays)
    load; object arrays are rejected afterwards by :func:`_as_state_dict`.
    """
    import importlib

    import numpy as np

    multiarray = importlib.import_module("numpy._core.multiarray")
    rec, scalar = multiarray._reconstruct, multiarray.scalar
    out: list[Any] = [rec, scalar, np.ndarray, np.dtype]
    out += [(rec, "numpy.core.multiarray._reconstruct"), (scalar, "numpy.core.multiarray.scalar")]
    for code in "?bBhHiIlLqQefdgFDG":
        out.append(type(np.dtype(code)))
    return out


def _one_line(exc: BaseException) -> str:
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())
    found = re.search(
        r"(?:Unsupported (?:global|operand)|Trying to load unsupported|Unsupported class)"
        r".*?(?= was not| Check the documentation|$)",
        text,
    )
    if found:  # torch's long advice to pass weights_only=False is exactly what not to do
        text = found.group(0).rstrip(". ")
    elif text.startswith("Unsupported operand"):
        text = f"not a torch.save file or a protocol-2 pickle: {text}"
    elif text.startswith("Weights only load failed"):
        text = "the file needs classes or functions beyond tensors and arrays"
    return text if len(text) <= 160 else text[:157] + "..."


def _read_npz(p: Path) -> dict[str, Any]:
    import numpy as np

    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _read_safetensors(p: Path) -> dict[str, Any]:
    from safetensors.torch import load_file  # optional: only if the user has it installed

    return dict(load_file(str(p), device="cpu"))


def _read_plain_pickle(p: Path) -> Any:
    """A pickle not written by torch.save, read by torch's weights-only unpickler."""
    from torch import _weights_only_unpickler as wou

    with p.open("rb") as fh:
        proto = fh.read(2)[1:]
    if proto and proto[0] > 2:  # the restricted unpickler reads protocols 0-2 only
        raise WeightsError(f"a protocol-{proto[0]} pickle not written by torch.save")
    with p.open("rb") as fh, torch.serialization.safe_globals(_numpy_safe_globals()):
        return wou.Unpickler(fh, encoding="latin1").load()


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict of tensors or numpy arrays, never running code from the file.

    Accepted: ``torch.save`` files (``.pt``/``.pth``, zip or legacy format, including the
    C3D Sports-1M ``c3d.pickle`` of the PyTorch port), read with
    ``torch.load(weights_only=True)`` with numpy arrays allowlisted; plain pickles of
    tensors/numpy arrays (the Caffe conversion), read by the same restricted unpickler;
    ``.npz`` (``allow_pickle=False``); ``.safetensors`` if the package is installed.
    Anything that needs another class or function (a pickle whose ``__reduce__`` would run
    code, a pickled ``nn.Module``) is refused with a :class:`WeightsError` before any of it
    runs; docs/features.md shows how to convert a legacy file you trust.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"weights file {str(p)!r} not found; pass the path of a local state dict "
            "(e.g. the C3D Sports-1M c3d.pickle or a torchvision .pth), or omit --weights "
            "for seeded random init"
        )
    suffix = p.suffix.lower()
    try:
        if suffix == ".npz":
            obj: Any = _read_npz(p)
        elif suffix == ".safetensors":
            obj = _read_safetensors(p)
        else:
            with open(p, "rb") as fh:
                head = fh.read(4)
            try:
                with (
                    torch.serialization.safe_globals(_numpy_safe_globals()),
                    warnings.catch_warnings(),
                ):
                    warnings.filterwarnings("ignore", "Detected pickle protocol")
                    obj = torch.load(p, map_location="cpu", weights_only=True)
            except Exception as torch_exc:
                # torch.load refuses a plain (not torch.save) pickle; such a file gets the
                # same restricted unpickler, nothing else.
                if head[:1] != b"\x80":
                    raise
                try:
                    obj = _read_plain_pickle(p)
                except WeightsError:
                    raise
                except Exception:
                    raise torch_exc from None
                if not isinstance(obj, dict):  # a legacy torch file's magic number
                    raise torch_exc from None
    except Exception as exc:
        raise WeightsError(
            f"{p}: refused as weights ({_one_line(exc)}); {_accepted()}; to convert a legacy "
            "file you trust, see 'Converting a legacy weights file' in docs/features.md"
        ) from None
    return _as_state_dict(obj, str(p))


def load_weights(
    net: nn.Module, state: dict[str, torch.Tensor], spec: BackboneSpec, source: str
) -> None:
    """Load ``state`` into ``net`` strictly; any missing, unexpected or mis-shaped key is an error."""
    renamed: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        for old, new in spec.aliases.items():
            if k.startswith(old):
                k = new + k[len(old) :]
                break
        renamed[k] = v
    own = net.state_dict()
    missing = sorted(set(own) - set(renamed))
    unexpected = sorted(set(renamed) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(renamed[k].shape)} != model {tuple(own[k].shape)}"
        for k in set(own) & set(renamed)
        if tuple(renamed[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if shapes:
            parts.append(f"shape mismatches {shapes}")
        raise WeightsError(
            f"{source} does not fit backbone {spec.name!r}: "
            + "; ".join(parts)
            + f". Use a state dict saved from {spec.name!r} (with its original parameter names)."
        )
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in renamed.items()}, strict=True)


def weights_tag(weights: str | os.PathLike[str] | None, seed: int) -> tuple[str, str]:
    """``(short id, provenance string)``: ``("random0", "random-init seed=0")`` or
    ``("w1a2b3c4d5e6", "sha256:<digest>")``."""
    if weights is None:
        return f"random{seed}", f"random-init seed={seed}"
    p = Path(weights)
    if not p.is_file():
        raise FileNotFoundError(
            f"weights file {str(p)!r} not found; pass the path of a local state dict, "
            "or omit --weights for seeded random init"
        )
    st = p.stat()
    digest = _cached_digest(str(p.resolve()), st.st_size, st.st_mtime_ns)
    return f"w{digest[:12]}", f"sha256:{digest}"


def parse_weights_tag(tag: str) -> tuple[int | None, str | None]:
    """The inverse of :func:`weights_tag`'s provenance string: ``(seed, None)`` for
    ``"random-init seed=N"``, ``(None, sha256)`` for ``"sha256:<digest>"``.

    Also reads the short ids (``"random3"``, ``"random"``), which stores of an early version
    wrote. Anything else is a ``ValueError``."""
    text = str(tag).strip()
    if text.startswith("sha256:") and len(text) > len("sha256:"):
        return None, text[len("sha256:"):]
    if text.startswith("random-init seed="):
        rest = text[len("random-init seed="):]
    elif text.startswith("random"):
        rest = text[len("random"):] or "0"
    else:
        raise ValueError(f"unknown weights tag {tag!r}: expected 'random-init seed=N' or 'sha256:<digest>'")
    try:
        return int(rest), None
    except ValueError:
        raise ValueError(f"unknown weights tag {tag!r}: expected 'random-init seed=N' or 'sha256:<digest>'") from None


@functools.lru_cache(maxsize=16)
def _cached_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a weights file, hashed once per (path, size, mtime)."""
    return file_digest(path)


# --- the extractor module -----------------------------------------------------------------


class ClipFeatureExtractor(nn.Module):
    """Runs a backbone up to ``layer`` and pools its map into clip and patch features.

    ``forward(x)`` with ``x`` [B, 3, L, H, W] (normalised) returns a dict:
    ``"clip"`` [B, D] global average of the map, ``"patches"`` [B, P, D] the map averaged
    over time and adaptively pooled to ``grid x grid`` (P = grid**2, row-major).
    ``layer`` may join several stages with ``+`` (e.g. ``"layer2+layer3"``): each map is
    pooled the same way and the results are concatenated along D.
    """

    def __init__(self, spec: BackboneSpec, net: nn.Module, layer: str, grid: int,
                 background_clips: int = 0) -> None:
        super().__init__()
        if grid < 1:
            raise ValueError(f"patch grid must be >= 1, got {grid}")
        self.spec = spec
        self.layer = layer
        self.grid = grid
        self.dim = spec.channels(layer)
        self.net = net
        stages = _stages(spec.name, net)
        names = [n for n, _ in stages]
        wanted = layer.split("+")
        self._order = wanted  # output order of the concatenated parts
        self._taps = {w for w in wanted if w not in DESCRIPTORS}
        self._stages = stages[: max((names.index(w) for w in self._taps), default=-1) + 1]
        families = [w for w in wanted if w in DESCRIPTORS]
        self.descriptors = ClassicalDescriptors(families, grid, background_clips) if families else None
        # clips of history each forward wants (the `objects` background): the caller passes the
        # clips of the same video just before the batch as ``history``
        self.context_clips = self.descriptors.background_clips if self.descriptors is not None else 0
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1, 1), persistent=False)

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    def normalize(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, L, H, W, 3] -> float [B, 3, L, H, W] normalised for this backbone."""
        # one float copy, then the same arithmetic in place (no further temporaries)
        x = frames.permute(0, 4, 1, 2, 3).to(torch.float32, memory_format=torch.contiguous_format)
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        return x.mul_(self.spec.scale / 255.0).sub_(mean).div_(std)  # (B, 3, L, H, W)

    def forward(self, x: torch.Tensor, history: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``x`` [B, 3, L, H, W] normalised clips; ``history``: the video's clips just before
        ``x``'s first, normalised the same way (at most ``context_clips`` are read)."""
        parts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if self.descriptors is not None:
            mean, std = self.get_buffer("mean"), self.get_buffer("std")
            rgb = (x.float() * std + mean) / self.spec.scale  # back to RGB in [0, 1]
            before = None
            if history is not None and self.context_clips and history.shape[0]:
                before = (history[-self.context_clips :].float() * std + mean) / self.spec.scale
            out = self.descriptors(rgb, before)
            offset = 0
            for fam in self.descriptors.families:
                width = DESCRIPTORS[fam]
                parts[fam] = (
                    out["clip"][:, offset : offset + width].to(x.dtype),
                    out["patches"][..., offset : offset + width].to(x.dtype),
                )
                offset += width
        for name, stage in self._stages:
            x = stage(x)
            if name in self._taps:
                fmap = x.mean(dim=2)  # (B, C, H', W')
                grid = nn.functional.adaptive_avg_pool2d(fmap, self.grid)  # (B, C, g, g)
                # (B, C) global average, (B, g*g, C) patches
                parts[name] = (fmap.mean(dim=(2, 3)), grid.flatten(2).transpose(1, 2))
        return {
            "clip": torch.cat([parts[n][0] for n in self._order], dim=1),
            "patches": torch.cat([parts[n][1].to(parts[n][0].dtype) for n in self._order], dim=2),
        }


def build_extractor(
    name: str,
    *,
    layer: str | None = None,
    grid: int = 2,
    weights: str | os.PathLike[str] | None = None,
    seed: int = 0,
    background_clips: int = 0,
) -> ClipFeatureExtractor:
    """A :class:`ClipFeatureExtractor` in eval mode: weights from ``weights`` or seeded random init.

    ``background_clips``: clips before each clip whose frames join the ``objects`` descriptor's
    background (0: the clip's own frames alone)."""
    spec = get_spec(name)
    layer = layer or spec.default_layer
    spec.channels(layer)  # validates the name
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = spec.build()
    if not spec.layers:
        if weights is not None:
            raise WeightsError(f"backbone {name!r} has no network and takes no --weights")
        log.info("%s: no network (classical descriptors only)", name)
    elif weights is not None:
        load_weights(net, read_state_dict(weights), spec, os.fspath(weights))
        log.info("loaded %s weights from %s", name, weights)
    else:
        log.info("%s: seeded random init (seed=%d); no weights file given", name, seed)
    return ClipFeatureExtractor(spec, net, layer, grid, background_clips).eval()


def backbone_names() -> list[str]:
    return sorted(BACKBONES)


__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "C3D",
    "ClipFeatureExtractor",
    "Tiny3D",
    "WeightsError",
    "backbone_names",
    "build_extractor",
    "get_spec",
    "load_weights",
    "read_state_dict",
    "weights_tag",
]
