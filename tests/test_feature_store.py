"""Round trips of the Zarr feature store against an in-memory and an on-disk store."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zarr

from storage.features import FeatureStore, IncompleteVideoError


@pytest.fixture(params=["memory", "disk", "file-url"])
def store(request, tmp_path) -> FeatureStore:
    if request.param == "memory":
        return FeatureStore(f"memory://mktn-test-{uuid.uuid4().hex}")
    if request.param == "file-url":
        return FeatureStore(f"file://{tmp_path / 'store.zarr'}")
    return FeatureStore(tmp_path / "store.zarr")


def _video(t: int, p: int = 4, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = rng.normal(size=(t, d)).astype(np.float32)
    patches = rng.normal(size=(t, p, d)).astype(np.float32)
    starts = np.arange(t, dtype=np.float64) * 0.5
    times = np.stack([starts, starts + 1.0], axis=1)
    return frames, patches, times


def test_round_trip(store: FeatureStore) -> None:
    group = store.extractor(
        "synth", "tiny3d@random-seed0", attrs={"backbone": "tiny3d", "fps": 15.0}
    )
    frames, patches, times = _video(5)
    group.write_video("vid_a", frames, patches, times, {"fps": 15.0, "padded_frames": 0})
    feats = group.read_video("vid_a")
    assert feats.frames.dtype == np.float16 and feats.frames.shape == (5, 8)
    assert feats.patches.shape == (5, 4, 8)
    np.testing.assert_allclose(feats.frames, frames, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(feats.patches, patches, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(feats.clip_times, times)
    assert feats.attrs["fps"] == 15.0 and feats.attrs["num_clips"] == 5
    assert feats.attrs["dimension_names"]["patches"] == ["clip", "patch", "feature"]
    assert "commit" in feats.attrs and "code_version" in feats.attrs
    assert group.list_videos() == ["vid_a"] and group.is_complete("vid_a")
    # a second handle on the same root sees the same data
    again = FeatureStore(store.root).extractor("synth", "tiny3d@random-seed0", create=False)
    np.testing.assert_array_equal(again.read_video("vid_a").frames, feats.frames)
    assert store.list_extractors() == [("synth", "tiny3d@random-seed0")]


def test_float32_and_overwrite(store: FeatureStore) -> None:
    group = store.extractor("d", "e")
    frames, patches, times = _video(3)
    group.write_video("v", frames, patches, times, dtype="float32")
    np.testing.assert_array_equal(group.read_video("v").frames, frames)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        group.write_video("v", frames, patches, times)
    frames2, patches2, times2 = _video(7, seed=1)
    group.write_video("v", frames2, patches2, times2, overwrite=True)
    assert group.read_video("v").num_clips == 7


def test_uncommitted_video_is_invisible_and_replaced(store: FeatureStore) -> None:
    group = store.extractor("d", "e")
    frames, patches, times = _video(4)
    # Simulate a crash after the arrays but before the commit marker.
    raw = zarr.open_group(store=store._store, path="features/d/e", mode="r+")
    half = raw.create_group("broken", attributes={"video_id": "broken"})
    half.create_array("frames", shape=(4, 8), dtype="float16")[...] = frames
    assert not group.is_complete("broken")
    assert group.list_videos() == [] and group.list_videos(complete_only=False) == ["broken"]
    with pytest.raises(IncompleteVideoError, match="run `mktn extract` again"):
        group.read_video("broken")
    group.write_video("broken", frames, patches, times)  # no overwrite needed for leftovers
    assert group.list_videos() == ["broken"]


def test_bad_keys_and_shapes(store: FeatureStore) -> None:
    group = store.extractor("d", "e")
    frames, patches, times = _video(2)
    for bad in ("../x", "a/b", "/abs", ".."):
        with pytest.raises(ValueError, match="cannot be used as a store key"):
            group.write_video(bad, frames, patches, times)
    with pytest.raises(ValueError, match="cannot be used as a store key"):
        store.extractor("../d", "e")
    with pytest.raises(ValueError, match=r"patches must be \[T=2, P, D=8\]"):
        group.write_video("v", frames, patches[:1], times)
    with pytest.raises(ValueError, match="NaN"):
        group.write_video("v", frames * np.nan, patches, times)
    with pytest.raises(ValueError, match="float32"):
        group.write_video("v", frames * 1e6, patches, times)
    with pytest.raises(KeyError, match="mktn extract"):
        store.extractor("nope", "none", create=False)


def test_extractor_config_mismatch(store: FeatureStore) -> None:
    store.extractor("d", "e", attrs={"fps": 15.0})
    store.extractor("d", "e", attrs={"fps": 15.0})
    with pytest.raises(ValueError, match="fps: stored 15.0 != 30.0"):
        store.extractor("d", "e", attrs={"fps": 30.0})


def test_normalization_matches_numpy(store: FeatureStore) -> None:
    group = store.extractor("d", "e")
    allf, allp = [], []
    for i, t in enumerate((3, 5, 1)):
        frames, patches, times = _video(t, seed=i)
        frames = frames * (i + 1) + i
        group.write_video(f"v{i}", frames, patches, times, dtype="float32")
        allf.append(frames)
        allp.append(patches.reshape(-1, 8))
    assert group.normalization() is None
    norm = group.compute_normalization()
    f = np.concatenate(allf)
    p = np.concatenate(allp)
    np.testing.assert_allclose(norm.frames_mean, f.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.frames_std, f.std(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.patches_std, p.std(0), rtol=1e-5, atol=1e-5)
    stored = group.normalization()
    assert stored is not None and stored.num_clips == 9 and stored.num_videos == 3
    z = stored.standardize_frames(f)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-4)


def test_concurrent_writers_of_different_videos(tmp_path) -> None:
    root = tmp_path / "store.zarr"
    FeatureStore(root).extractor("d", "e", attrs={"backbone": "x"})

    def write(i: int) -> None:
        group = FeatureStore(root).extractor("d", "e", attrs={"backbone": "x"})
        frames, patches, times = _video(3 + i, seed=i)
        group.write_video(f"v{i:02d}", frames, patches, times, {"i": i})

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(write, range(12)))
    group = FeatureStore(root).extractor("d", "e", create=False)
    assert group.list_videos() == [f"v{i:02d}" for i in range(12)]
    assert [group.read_video(f"v{i:02d}").attrs["i"] for i in range(12)] == list(range(12))
    assert group.attrs["backbone"] == "x"


def test_select_group_picks_the_one_match_or_names_the_choices(tmp_path) -> None:
    store = FeatureStore(tmp_path / "store.zarr")
    with pytest.raises(ValueError, match=r"holds 0 .*none \(the store holds no groups\); pass --dataset"):
        store.select_group()
    store.extractor("synth", "a")
    group = store.select_group()
    assert (group.dataset, group.extractor_id) == ("synth", "a")
    store.extractor("synth", "b")
    store.extractor("other", "a")
    with pytest.raises(ValueError, match=r"holds 2 .* for dataset='synth': \[\('synth', 'a'\), \('synth', 'b'\)\]"):
        store.select_group("synth")
    assert store.select_group("synth", "b").extractor_id == "b"
    assert store.select_group(extractor_id="b").dataset == "synth"
    with pytest.raises(ValueError, match=r"for dataset='nope': none \(the store holds .*\('other', 'a'\).*; try this$"):
        store.select_group("nope", hint="try this")
    message = ""
    try:
        store.select_group("synth")
    except ValueError as exc:
        message = str(exc)
    assert "\n" not in message
