"""The README's "From Python" example runs as written, and `python -m pipeline.cli` is `mktn`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def readme_python_block(section: str = "### From Python") -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(section)
    match = re.search(r"```python\n(.*?)```", text[start:], flags=re.S)
    assert match is not None, f"no python block under {section!r} in README.md"
    return match.group(1)


def test_readme_python_api_example_runs(tmp_path: Path, monkeypatch, capsys, one_thread) -> None:
    from model_fixtures import planted_data, write_stores

    data = planted_data(num_videos=8, queries_per_video=2, clips=12, dim=12, sentence_dim=16)
    _, _, ann = write_stores(data, tmp_path / "made")
    (tmp_path / "data" / "features").mkdir(parents=True)
    for split in ("train", "val", "test"):
        shutil.copy(ann / f"{split}.jsonl", tmp_path / "data" / f"{split}.jsonl")
    for vid, v in data.videos.items():  # the Moment-DETR layout the example imports
        np.savez(tmp_path / "data" / "features" / f"{vid}.npz", features=v.frames)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MKTN_CACHE_DIR", str(tmp_path / "cache"))
    exec(compile(readme_python_block(), "README.md (From Python)", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert f"imported {len(data.videos)} videos" in out and "'mAP@0.75'" in out
    assert (tmp_path / "runs" / "mine" / "best.pt").is_file()
    assert (tmp_path / "runs" / "mine" / "eval" / "predictions_test_moment_detr.jsonl").is_file()


def test_python_dash_m_pipeline_cli_is_mktn(capsys) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=120)

    version = run("--version")
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and version.returncode == 0
    assert version.stdout == capsys.readouterr().out and version.stdout.startswith("mktn ")
    helped = run("--help")
    assert helped.returncode == 0 and "usage: mktn" in helped.stdout and "import-features" in helped.stdout
    bad = run("reproduce", "--clip-seconds", "1")
    assert bad.returncode == main(["reproduce", "--clip-seconds", "1"]) == 2
    assert "apply to --features-from only" in bad.stderr
