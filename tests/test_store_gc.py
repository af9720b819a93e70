"""Issue 13, item 6: ``mktn store check|gc`` finds and removes leftovers of killed writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from storage.features import FeatureStore


def test_store_check_and_gc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "f.zarr"
    group = FeatureStore(root).extractor("d", "e", attrs={"backbone": "x"})
    t = 3
    times = np.stack([np.arange(t), np.arange(t) + 1.0], axis=1)
    group.write_video("good", np.ones((t, 4)), np.ones((t, 2, 4)), times)
    group.write_video("killed", np.ones((t, 4)), np.ones((t, 2, 4)), times)
    gdir = root / "features" / "d" / "e"
    meta = json.loads((gdir / "killed" / "zarr.json").read_text())
    del meta["attributes"]["commit"]  # as a first write killed before its commit marker
    (gdir / "killed" / "zarr.json").write_text(json.dumps(meta))
    (gdir / "killed" / "frames" / "c").mkdir(exist_ok=True)
    (gdir / f"zarr.{'a' * 32}.partial").write_bytes(b"x")  # a killed zarr write
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / ".last.pt.k3j2x9ab.tmp").write_bytes(b"half a checkpoint")
    (runs / "last.pt").write_bytes(b"a checkpoint")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (gdir / ".gone.writing").write_text(f"{dead}@{socket.gethostname()}")
    (gdir / ".busy.writing").write_text(f"{os.getpid()}@{socket.gethostname()}")

    args = ["store", "check", "--store", str(root), "--store", str(runs), "--min-age", "0"]
    assert main([*args, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    kinds = sorted(i["kind"] for r in report.values() for i in r["leftovers"])
    assert kinds == ["lock", "partial", "stale-lock", "tmp", "uncommitted-video"]
    assert main(["store", "check", "--store", str(runs)]) == 1  # default min age: too recent
    assert "kept: younger than 600 s" in capsys.readouterr().out
    assert main(["store", "gc", "--store", str(root), "--store", str(runs), "--min-age", "0"]) == 0
    capsys.readouterr()
    assert main(args) == 1  # only the live writer's lock is left
    assert "kept: its writer is alive" in capsys.readouterr().out
    (gdir / ".busy.writing").unlink()
    assert main(args) == 0
    assert (runs / "last.pt").exists() and not (runs / ".last.pt.k3j2x9ab.tmp").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ZarrUserWarning about leftovers any more
        reader = FeatureStore(root).extractor("d", "e", create=False)
        assert reader.list_videos(complete_only=False) == ["good"]
        assert reader.read_video("good").num_clips == t
    assert main(["store", "check", "--store", str(tmp_path / "nope")]) == 2
