"""3D-CNN registry: architectures, clip/patch shapes, weight loading, seeded init."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.backbones import (
    BACKBONES,
    C3D,
    TemporalDifference,
    WeightsError,
    build_extractor,
    read_state_dict,
    weights_tag,
)

# (backbone, input [L, H, W]) small enough to be quick, large enough for every stage.
SHAPE_CASES = [
    ("c3d", (16, 64, 64)),
    ("r2plus1d_18", (8, 64, 64)),
    ("r3d_18", (8, 64, 64)),
    ("mc3_18", (8, 64, 64)),
    ("s3d", (16, 112, 112)),
    ("tiny3d", (8, 112, 112)),
]


@pytest.mark.parametrize(("name", "size"), SHAPE_CASES)
def test_every_backbone_gives_clip_and_patch_features(
    name: str, size: tuple[int, int, int]
) -> None:
    ex = build_extractor(name, grid=2)
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        out = ex(x)
    dim = BACKBONES[name].channels(BACKBONES[name].default_layer)
    assert out["clip"].shape == (1, dim)
    assert out["patches"].shape == (1, 4, dim)
    # the clip feature is the global average; the patches average to it on an even map
    assert torch.isfinite(out["clip"]).all()


def test_layer_and_grid_choice() -> None:
    ex = build_extractor("r3d_18", layer="layer2", grid=3)
    with torch.inference_mode():
        out = ex(torch.randn(2, 3, 4, 48, 48))
    assert out["clip"].shape == (2, 128) and out["patches"].shape == (2, 9, 128)
    both = build_extractor("tiny3d", layer="layer2+layer3", grid=2)
    with torch.inference_mode():
        out = both(torch.randn(2, 3, 8, 112, 112))
    assert both.dim == 384 and out["clip"].shape == (2, 384) and out["patches"].shape == (2, 4, 384)
    with pytest.raises(ValueError, match="has no layer 'layer9'"):
        build_extractor("r3d_18", layer="layer9")
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        build_extractor("vgg")


@pytest.fixture(scope="module")
def c3d_source() -> dict[str, torch.Tensor]:
    """A C3D state dict in the original Sports-1M layout (random values, seed 123)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        return C3D().state_dict()


def test_c3d_is_the_original_architecture() -> None:
    net = C3D()
    names = [n for n, _ in net.named_parameters()]
    convs = ["conv1a", "conv2a", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b"]
    assert names == [f"{c}.{p}" for c in [*convs, "fc6", "fc7", "fc8"] for p in ("weight", "bias")]
    assert (
        net.fc6.in_features == 8192 and net.fc7.out_features == 4096 and net.fc8.out_features == 487
    )
    with torch.inference_mode():
        logits = net.eval()(torch.randn(1, 3, 16, 112, 112))  # pool5 -> 512 x 1 x 4 x 4 = 8192
    assert logits.shape == (1, 487)


def test_c3d_loads_original_layout_and_port_names(
    tmp_path: Path, c3d_source: dict[str, torch.Tensor]
) -> None:
    source = c3d_source
    path = tmp_path / "c3d_sports1m.pth"
    torch.save(source, path)
    ex = build_extractor("c3d", weights=path)
    for k, v in source.items():
        assert torch.equal(ex.net.state_dict()[k], v), k
    # the PyTorch port's names (conv1/conv2), pickled as numpy arrays like the Caffe
    # conversion (a Python 2 era protocol-2 pickle) and as torch.save of numpy arrays
    ported = {
        k.replace("conv1a.", "conv1.").replace("conv2a.", "conv2."): v.numpy()
        for k, v in source.items()
    }
    ppath = tmp_path / "c3d.pickle"
    with ppath.open("wb") as fh:
        pickle.dump(ported, fh, protocol=2)
    ex2 = build_extractor("c3d", weights=ppath)
    assert torch.equal(ex2.net.conv1a.weight, source["conv1a.weight"])
    tag, prov = weights_tag(ppath, 0)
    assert tag.startswith("w") and prov.startswith("sha256:")
    small = {k: v for k, v in ported.items() if not k.startswith(("fc6", "fc7", "conv5"))}
    for name, save in [
        ("port.pickle", lambda f: torch.save(small, f)),
        ("legacy.pickle", lambda f: torch.save(small, f, _use_new_zipfile_serialization=False)),
        ("c3d.npz", lambda f: np.savez(f, **small)),
    ]:
        save(tmp_path / name)
        state = read_state_dict(tmp_path / name)
        assert state.keys() == small.keys(), name
        assert torch.equal(state["fc8.bias"], source["fc8.bias"]), name


class _Payload:
    """A pickle that, when unpickled, writes a marker file: the attack of issue 13."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (f"touch '{self.marker}'",))


def test_weights_that_run_code_are_refused_before_running(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = {"conv1a.weight": _Payload(marker)}
    files = {}
    for proto in (0, 2, 4):
        files[f"evil{proto}.pickle"] = pickle.dumps(evil, protocol=proto)
    for name, kw in [("evil.pth", {}), ("evil_legacy.pth", {"_use_new_zipfile_serialization": 0})]:
        torch.save(evil, tmp_path / name, **kw)  # type: ignore[arg-type]
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    np.savez(tmp_path / "evil.npz", w=np.array([_Payload(marker)], dtype=object))
    for name in [*files, "evil.pth", "evil_legacy.pth", "evil.npz"]:
        with pytest.raises(WeightsError) as err:
            read_state_dict(tmp_path / name)
        msg = str(err.value)
        assert "\n" not in msg and "accepted: torch.save files" in msg, msg
        assert "Converting a legacy weights file" in msg
        assert "weights_only=False" not in msg  # never advise the unsafe load
    assert not marker.exists()


def test_mismatched_weights_list_the_keys(
    tmp_path: Path, c3d_source: dict[str, torch.Tensor]
) -> None:
    state = dict(c3d_source)
    del state["fc8.bias"]
    state["conv6.weight"] = torch.zeros(1)
    state["fc7.weight"] = torch.zeros(10, 10)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as err:
        build_extractor("c3d", weights=path)
    msg = str(err.value)
    assert "missing keys ['fc8.bias']" in msg
    assert "unexpected keys ['conv6.weight']" in msg
    assert "fc7.weight: file (10, 10) != model (4096, 4096)" in msg
    with pytest.raises(FileNotFoundError, match="omit --weights"):
        build_extractor("c3d", weights=tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match="refused as weights"):
        build_extractor("c3d", weights=tmp_path / "junk.pth")


def test_torchvision_state_dict_loads(tmp_path: Path) -> None:
    import torchvision.models.video as tvv

    torch.manual_seed(7)
    src = tvv.mc3_18(weights=None).state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.items()}}, tmp_path / "mc3.pth")
    ex = build_extractor("mc3_18", weights=tmp_path / "mc3.pth")
    assert torch.equal(
        ex.net.state_dict()["layer4.1.conv2.0.weight"], src["layer4.1.conv2.0.weight"]
    )


def test_random_init_is_deterministic_for_a_seed() -> None:
    state_before = torch.random.get_rng_state()
    a = build_extractor("tiny3d", seed=3).state_dict()
    b = build_extractor("tiny3d", seed=3).state_dict()
    c = build_extractor("tiny3d", seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["net.stem.1.weight"], c["net.stem.1.weight"])
    assert torch.equal(torch.random.get_rng_state(), state_before)  # global RNG untouched
    assert weights_tag(None, 3) == ("random3", "random-init seed=3")
    x = torch.randint(0, 255, (1, 8, 112, 112, 3), dtype=torch.uint8)
    e1, e2 = build_extractor("tiny3d", seed=3), build_extractor("tiny3d", seed=3)
    with torch.inference_mode():
        assert torch.equal(e1(e1.normalize(x))["clip"], e2(e2.normalize(x))["clip"])


def test_temporal_difference_input() -> None:
    x = torch.zeros(1, 3, 4, 8, 8)
    x[:, 0, 2:] = 1.0  # red switches on at frame 2
    y = TemporalDifference(gain=3.0)(x)
    assert y.shape == (1, 6, 4, 8, 8)
    assert torch.equal(y[:, :3], x)
    assert y[0, 3, :, 0, 0].tolist() == [0.0, 0.0, 3.0, 0.0]  # only the change shows
