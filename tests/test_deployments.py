"""End to end through a real Prefect server: `prefect server start` on loopback, `mktn serve`,
`prefect deployment run extract-features/<name> --param ...` through the CLI, then the store.

Everything runs as subprocesses with PREFECT_HOME in a temporary folder, so the
test touches no user configuration and no network (analytics off).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not healthy after {timeout} s:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _api(env: dict[str, str], path: str, body: dict | None = None) -> object:
    req = urllib.request.Request(
        env["PREFECT_API_URL"] + path,
        data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real `prefect server start` on a free loopback port; yields the env that points at it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_LOGGING_LEVEL="INFO",
    )
    log = home / "server.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/health", 120, proc, log)
        yield env
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def tiny_videos(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Two real videos: two from the synthetic generator... and one corrupt file beside them."""
    from pipeline.synth import build_synth_config, generate_benchmark

    root = tmp_path_factory.mktemp("dep-data")
    cfg = build_synth_config("quick", num_videos=2, min_duration=5.0, max_duration=5.0)
    generate_benchmark(root / "synth", cfg, 3, workers=1, progress=False)
    videos = root / "synth" / "videos"
    (videos / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    return videos


def test_serve_and_run_extract_deployment(prefect_server: dict[str, str], tiny_videos: Path, tmp_path: Path) -> None:
    env = prefect_server
    work = tmp_path / "work"
    log = tmp_path / "serve.log"
    with log.open("wb") as fh:
        serve = subprocess.Popen(
            [str(BIN / "mktn"), "serve", "--name", "e2e", "--work", str(work), "--no-schedule", "--workers", "1"],
            env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
        )
    try:
        # every flow's deployment is registered
        deadline = time.monotonic() + 120
        names: set[str] = set()
        while time.monotonic() < deadline:
            assert serve.poll() is None, log.read_text()[-4000:]
            deps = _api(env, "/deployments/filter", {})
            names = {d["name"] for d in deps} if isinstance(deps, list) else set()
            if len(deps) >= 6:  # type: ignore[arg-type]
                break
            time.sleep(1)
        assert names == {"e2e"}, names
        flows = _api(env, "/flows/filter", {})
        assert {f["name"] for f in flows} >= {  # type: ignore[union-attr]
            "extract-features", "embed-queries", "train", "evaluate", "reproduce", "re-evaluate",
        }

        # the user's path: prefect deployment run <flow>/<deployment> --param ... --watch
        res = subprocess.run(
            [
                str(BIN / "prefect"), "deployment", "run", "extract-features/e2e",
                "--param", f"videos_dir={tiny_videos}",
                "--param", "dataset=e2e",
                "--param", 'extractor={"fps": 4.0}',
                "--watch", "--watch-timeout", "300",
            ],
            env=env, capture_output=True, text=True, timeout=330, cwd=tmp_path,
        )
        out = res.stdout + res.stderr
        assert res.returncode == 0, out + "\n--- serve log ---\n" + log.read_text()[-4000:]
        assert "Completed" in out, out

        # the store it wrote: both synthetic videos committed, the corrupt one absent
        from pipeline.extract import ExtractionConfig
        from storage.features import FeatureStore

        cfg = ExtractionConfig(dataset="e2e", fps=4.0)
        group = FeatureStore(work / "stores" / "features.zarr").extractor(
            "e2e", cfg.resolved_extractor_id(), create=False
        )
        vids = group.list_videos()
        assert len(vids) == 2 and "corrupt" not in vids, vids
        feats = group.read_video(vids[0])
        assert feats.frames.shape[0] == feats.clip_times.shape[0] > 0
        assert group.normalization() is not None

        # the flow run's final state names the failed video and why
        runs = _api(env, "/flow_runs/filter", {"flows": {"name": {"any_": ["extract-features"]}}})
        states = [r["state"] for r in runs]  # type: ignore[union-attr]
        assert states and states[0]["type"] == "COMPLETED", states
        assert "corrupt" in states[0]["message"] and "1 failed" in states[0]["message"], states[0]
        # the artifacts: progress at 100 %, the failure table
        arts = _api(env, "/artifacts/filter", {})
        by_key = {a["key"]: a for a in arts}  # type: ignore[union-attr]
        assert by_key["extraction-progress"]["data"] == pytest.approx(100.0)
        assert "corrupt" in json.dumps(by_key["extraction-failures"]["data"])
    finally:
        _stop(serve)
        shutil.rmtree(work / "prefect-results", ignore_errors=True)


def _reproduce(env: dict[str, str], work: Path, *extra: str) -> dict:
    res = subprocess.run(
        [str(BIN / "mktn"), "reproduce", "--quick", "--work", str(work), "--json", *extra],
        env=env, capture_output=True, text=True, timeout=600, cwd=work.parent,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    return json.loads(res.stdout[res.stdout.index("{"):])


@pytest.fixture(scope="module")
def quick_run(prefect_server: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """`mktn reproduce --quick` from nothing: the README's main command, cold."""
    work = tmp_path_factory.mktemp("reproduce") / "work"
    return work, _reproduce(prefect_server, work)


def test_mktn_reproduce_quick_cold_rerun_and_model_change(
    prefect_server: dict[str, str], quick_run: tuple[Path, dict]
) -> None:
    work, cold = quick_run
    # everything ran: synthetic data generated, 12 videos extracted, queries embedded, model trained
    assert cold["extraction"]["counts"]["done"] == 12 and not cold["extraction"]["failed"]
    assert cold["embedding"]["embedded"] and cold["training"]["trained"]
    # the test split evaluated once: the evaluate step reused train()'s evaluation of best.pt
    assert cold["evaluation"]["reused_from"] == str(Path(cold["training"]["run_dir"]) / "metrics_test.json")
    report = Path(cold["report"])
    assert report.parent == work / "report" / "synthetic-quick"
    for png in ("loss_curves", "recall", "timelines"):
        data = Path(cold["figures"][png]).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
    text = report.read_text()
    assert "R1@0.5" in text and "![loss curves](loss_curves.png)" in text and "prior only" in text
    metrics = json.loads(Path(cold["metrics_json"]).read_text())
    assert metrics["metrics"]["num_queries"] == cold["metrics"]["num_queries"] > 0
    assert 0.0 <= metrics["metrics"]["mIoU"] <= 100.0 and "baseline" in metrics
    assert set(metrics["controls"]) == {"prior", "order_prior", "video_swapped", "order_shuffled"}
    assert "points need the video" in text and cold["controls"] == metrics["controls"]
    # report.html beside it: a player per test video, each on the synthetic video's file
    page = Path(cold["report_html"])
    assert page.parent == report.parent and "[report.html](report.html)" in text
    srcs = re.findall(r'<video id="player-\d+" class="player" controls preload="\w+" src="([^"]+)"', page.read_text())
    assert srcs and all((page.parent / urllib.parse.unquote(src)).is_file() for src in srcs), srcs

    # nothing changed: no extraction, no embedding, no training; the same numbers. (Cache hits,
    # or, when someone edits the shared tree between the runs and the code digest in the keys
    # moves, the stores' commit markers: either way nothing is redone.)
    again = _reproduce(prefect_server, work)
    counts = again["extraction"]["counts"]
    assert counts["done"] == 0 and counts["cached"] + counts["skipped"] == 12, counts
    assert not again["embedding"]["embedded"] and not again["training"]["trained"]
    assert again["metrics"] == cold["metrics"]

    # a model setting changes: the model retrains, features and queries are reused
    changed = _reproduce(prefect_server, work, "--set", "train.lr=0.0007")
    assert changed["training"]["trained"] and changed["training"]["run_dir"] != cold["training"]["run_dir"]
    assert changed["extraction"]["counts"]["done"] == 0 and not changed["embedding"]["embedded"]


def test_reevaluate_appends_new_pairs_once(
    prefect_server: dict[str, str], quick_run: tuple[Path, dict], tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.reevaluate import reevaluate
    from flows.reproduce import QUICK_ENCODER

    work, cold = quick_run
    data = work / "data" / "synthetic" / "quick"
    root = tmp_path / "datasets"
    (root / "quick-again").mkdir(parents=True)
    manifest = {
        "name": "synthetic-quick", "format": "jsonl", "videos": str(data / "videos"),
        "annotations": {s: str(data / "annotations" / f"{s}.jsonl") for s in ("train", "val", "test")},
    }
    (root / "quick-again" / "dataset.json").write_text(json.dumps(manifest))
    best = str(Path(cold["training"]["run_dir"]) / "best.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with temporary_settings({PREFECT_API_URL: prefect_server["PREFECT_API_URL"]}):
        first = reevaluate(datasets_root=str(root), checkpoints=[best, str(broken)], work_dir=str(work),
                           encoder=QUICK_ENCODER)
        second = reevaluate(datasets_root=str(root), checkpoints=[best, str(broken)], work_dir=str(work),
                            encoder=QUICK_ENCODER)
        # send the queued logs and events now, while the server is up (else shutdown waits on retries)
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all()
        EventsWorker.drain_all()
    status = {Path(r["checkpoint"]).name: r for r in first["new_rows"]}
    assert status["best.pt"]["status"] == "ok", status
    assert status["best.pt"]["R1@0.5"] == pytest.approx(cold["metrics"]["R1@0.5"], abs=0.01)
    assert status["broken.pt"]["status"] == "failed" and status["broken.pt"]["error"]
    # the unchanged dataset and the scored checkpoint are not evaluated again; the broken one is retried
    assert [Path(r["checkpoint"]).name for r in second["new_rows"]] == ["broken.pt"]
    import csv

    with open(second["results_csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["ok", "failed", "failed"]
    assert "cannot be read" in rows[1]["error"] and "\n" not in rows[1]["error"]
    assert "| synthetic-quick |" in Path(second["results_md"]).read_text()
