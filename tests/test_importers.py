"""`mktn import-features` / `export-features` on small files the tests write in the public layouts."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.cli import main
from pipeline.importers import centred_windows
from storage.features import FeatureStore

RNG = np.random.default_rng(0)
LENGTHS = {"v_aaa": 7, "v_bbb": 12, "v_ccc": 3}
DURATIONS = {"v_aaa": 14.0, "v_bbb": 30.0, "v_ccc": 4.5}


def feats(width: int = 500) -> dict[str, np.ndarray]:
    return {v: RNG.normal(size=(t, width)).astype(np.float32) for v, t in LENGTHS.items()}


def activitynet_json(path: Path, durations: dict[str, float]) -> Path:
    """ActivityNet Captions layout: {vid: {duration, timestamps, sentences}}."""
    data = {v: {"duration": d, "timestamps": [[0.0, d / 2]], "sentences": [f"a person does {v}."]}
            for v, d in durations.items()}
    path.write_text(json.dumps(data))
    return path


def c3d_hdf5(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """The ActivityNet challenge release: one group per video holding 'c3d_features'."""
    with h5py.File(path, "w") as f:
        for vid, x in arrays.items():
            f.create_group(vid).create_dataset("c3d_features", data=x.astype(np.float64))
    return path


def plain_hdf5(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """2D-TAN's TACoS/Charades layout: one dataset per video."""
    with h5py.File(path, "w") as f:
        for vid, x in arrays.items():
            f.create_dataset(vid, data=x)
    return path


def read_all(store: Path, dataset: str) -> dict:
    fs = FeatureStore(store)
    [(ds, ex)] = [p for p in fs.list_extractors() if p[0] == dataset]
    group = fs.extractor(ds, ex, create=False)
    return {v: group.read_video(v, dtype="float32") for v in group.list_videos()}, group


def _import(*args: str) -> int:
    return main(["import-features", "--no-progress", *args])


def test_c3d_hdf5_with_activitynet_durations(tmp_path, capsys):
    arrays = feats()
    src = c3d_hdf5(tmp_path / "sub_activitynet_v1-3.c3d.hdf5", arrays)
    ann = activitynet_json(tmp_path / "val_1.json", {**DURATIONS, "v_gone": 9.0})
    store = tmp_path / "store"
    rc = _import("--format", "c3d-hdf5", "--source", str(src), "--store", str(store),
                 "--dataset", "activitynet", "--annotations", f"val={ann}")
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "MISSING v_gone: in the annotations but not in" in out and "3 videos" in out
    videos, group = read_all(store, "activitynet")
    assert sorted(videos) == sorted(LENGTHS)
    for vid, x in arrays.items():
        v = videos[vid]
        np.testing.assert_allclose(v.frames, x, atol=2e-3, rtol=1e-3)  # stored as float16
        assert v.patches.shape == (len(x), 1, 500)
        np.testing.assert_array_equal(v.patches[:, 0], v.frames)
        step = DURATIONS[vid] / len(x)
        np.testing.assert_allclose(v.clip_times[:, 0], np.arange(len(x)) * step)
        np.testing.assert_allclose(v.clip_times[-1, 1], DURATIONS[vid])
        assert v.attrs["time_axis"] == {"mode": "annotations", "duration": DURATIONS[vid], "clip_seconds": step}
        assert v.attrs["format"] == "c3d-hdf5" and v.attrs["source_key"] == f"/{vid}/c3d_features"
    import hashlib

    attrs = group.attrs
    assert attrs["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert attrs["feature_dim"] == 500 and attrs["num_patches"] == 1 and attrs["format"] == "c3d-hdf5"
    assert attrs["time_axis"]["policy"] == "source, else annotations"
    assert group.extractor_id == f"c3d-hdf5@{attrs['source_sha256'][:8]}"
    assert group.normalization() is not None
    # a rerun skips the complete videos
    assert _import("--format", "c3d-hdf5", "--source", str(src), "--store", str(store),
                   "--dataset", "activitynet", "--annotations", f"val={ann}", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["done"] == 0 and summary["skipped"] == 3 and summary["missing"] == ["v_gone"]


def test_hdf5_npy_npz_with_fixed_clip_seconds(tmp_path, capsys):
    arrays = feats(16)
    sources = {
        "hdf5": plain_hdf5(tmp_path / "tall_c3d_features.hdf5", arrays),
        "npy-dir": tmp_path / "npy",
        "npz-dir": tmp_path / "npz",
    }
    sources["npy-dir"].mkdir()
    sources["npz-dir"].mkdir()
    for vid, x in arrays.items():
        np.save(sources["npy-dir"] / f"{vid}.npy", x)
        np.savez(sources["npz-dir"] / f"{vid}.npz", features=x)
    for fmt, src in sources.items():
        store = tmp_path / f"store-{fmt}"
        rc = _import("--format", fmt, "--source", str(src), "--store", str(store), "--dataset", "d",
                     "--fps", "2", "--dtype", "float32")
        assert rc == 0, capsys.readouterr()
        videos, group = read_all(store, "d")
        assert sorted(videos) == sorted(arrays), fmt
        for vid, x in arrays.items():
            np.testing.assert_array_equal(videos[vid].frames, x)
            t = len(x)
            np.testing.assert_allclose(videos[vid].clip_times, np.stack([np.arange(t) / 2, np.arange(1, t + 1) / 2], 1))
            assert videos[vid].attrs["time_axis"]["mode"] == "fixed"
        assert group.attrs["time_axis"]["requested_as"] == "--fps 2"
    capsys.readouterr()


def test_video_features_layout(tmp_path, capsys):
    """v-iashin/video_features save_numpy: <name>_rgb.npy, <name>_flow.npy, _fps, _timestamps_ms."""
    src = tmp_path / "i3d"
    src.mkdir()
    for vid, t in LENGTHS.items():
        np.save(src / f"{vid}_rgb.npy", RNG.normal(size=(t, 8)).astype(np.float32))
        np.save(src / f"{vid}_flow.npy", RNG.normal(size=(t, 8)).astype(np.float32))
        np.save(src / f"{vid}_fps.npy", np.array(25.0))
        np.save(src / f"{vid}_timestamps_ms.npy", np.arange(1, t + 1) * 2560.0)
    store = tmp_path / "store"
    assert _import("--format", "video-features", "--source", str(src), "--store", str(store),
                   "--dataset", "d") == 2
    assert "feature types ['flow', 'rgb']" in capsys.readouterr().err
    assert _import("--format", "video-features", "--source", str(src), "--store", str(store),
                   "--dataset", "d", "--feature-type", "rgb+flow") == 0
    videos, group = read_all(store, "d")
    v = videos["v_bbb"]
    assert v.frames.shape == (12, 16)
    expect = np.load(src / "v_bbb_rgb.npy")
    np.testing.assert_allclose(v.frames[:, :8], expect, atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(v.clip_times, centred_windows(np.arange(1, 13) * 2.56))
    assert v.attrs["source_fps"] == 25.0 and v.attrs["time_axis"]["mode"] == "source"
    assert group.extractor_id.startswith("video-features-rgb+flow@")


def test_bad_inputs_one_line_each(tmp_path, capsys):
    arrays = feats(16)
    arrays["v_bbb"][5, 3] = np.nan
    arrays["v_wide"] = RNG.normal(size=(4, 20)).astype(np.float32)
    src = tmp_path / "npy"
    src.mkdir()
    for vid, x in arrays.items():
        np.save(src / f"{vid}.npy", x)
    store = tmp_path / "store"
    rc = _import("--format", "npy-dir", "--source", str(src), "--store", str(store), "--dataset", "d",
                 "--clip-seconds", "1.5")
    out = capsys.readouterr().out
    assert rc == 1  # two bad videos, the others imported
    lines = out.splitlines()
    assert any(line.startswith("  FAILED v_bbb: row 5 of 12 is NaN/inf") for line in lines), out
    assert any(line.startswith("  FAILED v_wide: feature width 20") and "have 16" in line for line in lines), out
    videos, _ = read_all(store, "d")
    assert sorted(videos) == ["v_aaa", "v_ccc"]
    # the same source into the same group with another time rule is refused
    assert _import("--format", "npy-dir", "--source", str(src), "--store", str(store), "--dataset", "d",
                   "--clip-seconds", "2") == 2
    assert "different configuration (time_axis" in capsys.readouterr().err

    # an "HDF5" file that is not one
    fake = tmp_path / "features.hdf5"
    fake.write_bytes(b"not hdf5 at all")
    assert _import("--format", "c3d-hdf5", "--source", str(fake), "--store", str(store), "--dataset", "x") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not an HDF5 file" in err and "Traceback" not in err
    # a plain hdf5 read as c3d-hdf5, and the other way round
    plain = plain_hdf5(tmp_path / "plain.hdf5", feats(16))
    assert _import("--format", "c3d-hdf5", "--source", str(plain), "--store", str(store), "--dataset", "x") == 2
    assert "use --format hdf5" in capsys.readouterr().err
    c3d = c3d_hdf5(tmp_path / "c3d.hdf5", feats(16))
    assert _import("--format", "hdf5", "--source", str(c3d), "--store", str(store), "--dataset", "x") == 2
    assert "use --format c3d-hdf5" in capsys.readouterr().err
    # no time axis anywhere
    assert _import("--format", "npy-dir", "--source", str(src), "--store", str(tmp_path / "s2"),
                   "--dataset", "d") == 2
    assert "gives no time axis" in capsys.readouterr().out
    # none of the annotated videos in the source
    ann = activitynet_json(tmp_path / "val_2.json", {"v_other": 3.0})
    assert _import("--format", "npy-dir", "--source", str(src), "--store", str(store), "--dataset", "d",
                   "--annotations", str(ann)) == 2
    assert "none of the 1 annotated videos" in capsys.readouterr().err
    # a pickled object array is refused, not loaded
    pick = tmp_path / "pick"
    pick.mkdir()
    np.save(pick / "v_obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert _import("--format", "npy-dir", "--source", str(pick), "--store", str(tmp_path / "s3"),
                   "--dataset", "d", "--clip-seconds", "1") == 2
    assert "without pickle" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["npz-dir", "npy-dir"])
def test_export_then_import_round_trip(tmp_path, capsys, fmt):
    arrays = feats(16)
    src = plain_hdf5(tmp_path / "f.hdf5", arrays)
    ann = activitynet_json(tmp_path / "train.json", DURATIONS)
    first = tmp_path / "first"
    assert _import("--format", "hdf5", "--source", str(src), "--store", str(first), "--dataset", "d",
                   "--annotations", str(ann)) == 0
    out = tmp_path / "exported"
    assert main(["export-features", "--store", str(first), "--dataset", "d", "--format", fmt,
                 "--out", str(out), "--no-progress"]) == 0
    assert "exported 3 videos (width 16)" in capsys.readouterr().out
    if fmt == "npz-dir":
        with np.load(out / "v_aaa.npz", allow_pickle=False) as z:
            assert z["features"].shape == (7, 16) and z["features"].dtype == np.float32
    else:
        assert np.load(out / "v_aaa.npy", allow_pickle=False).shape == (7, 16)
    second = tmp_path / "second"
    assert _import("--format", fmt, "--source", str(out), "--store", str(second), "--dataset", "d") == 0
    a, _ = read_all(first, "d")
    b, group = read_all(second, "d")
    assert sorted(a) == sorted(b)
    for vid in a:
        np.testing.assert_array_equal(a[vid].frames, b[vid].frames)
        np.testing.assert_array_equal(a[vid].patches, b[vid].patches)
        np.testing.assert_array_equal(a[vid].clip_times, b[vid].clip_times)
        assert b[vid].attrs["time_axis"]["mode"] == "source"
    assert main(["export-features", "--store", str(tmp_path / "nope"), "--dataset", "d", "--format", fmt,
                 "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_and_evaluate_on_an_imported_p1_store(tmp_path, capsys, one_thread):
    """Published features have no patches: OPM, APA and patch attention run on P = 1."""
    import torch
    from model_fixtures import planted_data, write_stores

    data = planted_data(num_videos=10, queries_per_video=2, clips=12, dim=12, sentence_dim=16)
    _, queries, ann = write_stores(data, tmp_path / "stores")
    src = tmp_path / "moment_detr_features"
    src.mkdir()
    for vid, v in data.videos.items():  # Moment-DETR layout: <vid>.npz with 'features'
        np.savez(src / f"{vid}.npz", features=v.frames)
    store = tmp_path / "imported"
    specs = [f"{s}={ann / f'{s}.jsonl'}" for s in ("train", "val", "test")]
    assert _import("--format", "npz-dir", "--source", str(src), "--store", str(store),
                   "--dataset", "synthetic", "--annotations", *specs) == 0
    capsys.readouterr()
    tiny = ["--set", "model.num_clips=16", "--set", "model.d_model=32", "--set", "model.num_heads=2",
            "--batch-videos", "3", "--no-progress", "--threads", "1", "--no-controls"]
    data_args = ["--features", str(store), "--queries", str(queries), "--annotations", str(ann)]
    out = tmp_path / "run"
    assert main(["train", *data_args, *tiny, "--epochs", "2", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["epochs_run"] == 2 and result["bad_steps"] == 0
    ckpt = torch.load(out / "best.pt", weights_only=True)
    assert ckpt["meta"]["features"]["attrs"]["num_patches"] == 1
    assert main(["evaluate", "--checkpoint", str(out / "best.pt"), *data_args, "--no-progress",
                 "--out", str(tmp_path / "ev"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0.0 <= metrics["R1@0.5"] <= 100.0 and 0.0 <= metrics["mAP"] <= 100.0
    lines = (tmp_path / "ev" / "predictions_test_moment_detr.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert set(first) == {"qid", "query", "vid", "pred_relevant_windows"}
    assert len(lines) == metrics["num_queries"] and first["query"].startswith("concept")
    assert all(len(w) == 3 for w in first["pred_relevant_windows"])
