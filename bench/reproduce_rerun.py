"""Cold run vs cached rerun of ``mktn reproduce`` (docs/benchmarks.md, "Orchestration").

    python bench/reproduce_rerun.py --work /tmp/mktn-bench [--quick] [--snapshot] [--reruns 2]

Runs ``mktn reproduce --json`` in an empty work directory (cold: synthetic data,
extraction, embedding, training, evaluation, report), then again with nothing
changed, and prints both wall times, their ratio, what each run did (videos
extracted, embedded or not, trained or not) and the load average around each
run (the CPU is shared), and the rerun's own breakdown (imports, the wait for the temporary
Prefect server, the flow, stopping). ``MKTN_CACHE_DIR`` defaults to a fresh ``<work>-cache``
folder beside the work directory. ``--snapshot`` runs the code of ``git HEAD`` exported to a
temporary folder, so edits others make to the working tree during the cold run
cannot change the code digests the cache keys include.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(work: Path, quick: bool, env: dict[str, str], cwd: str) -> dict[str, object]:
    cmd = [
        sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())",
        "reproduce", "--work", str(work), "--json",
    ] + (["--quick"] if quick else [])
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    # cwd matters: `python -c` puts it first on sys.path, before PYTHONPATH
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise SystemExit(f"mktn reproduce failed with {proc.returncode}")
    out = proc.stdout
    summary = json.loads(out[out.index("{"):])
    return {
        "wall_s": round(wall, 1),
        "flow_wall_s": summary["wall_seconds"],
        # imports_s (to the flow's modules), server_wait_s (left to wait for the temporary
        # Prefect server after them), flow_s, drain_stop_s, server_boot_s (its own start-up)
        "timings": summary.get("timings"),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "extraction": summary["extraction"]["counts"],
        "embedded": summary["embedding"]["embedded"],
        "trained": summary["training"]["trained"],
        "metrics": {k: round(v, 2) for k, v in summary["metrics"].items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="an empty (or absent) work directory")
    parser.add_argument("--quick", action="store_true", help="the 12-video quick set instead of the default")
    parser.add_argument("--snapshot", action="store_true", help="run the code of git HEAD, exported")
    parser.add_argument("--reruns", type=int, default=1, help="cached reruns after the cold run (default 1)")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"--work {work} is not empty: the cold run needs an empty work directory")
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    env.setdefault("PREFECT_HOME", str(work.parent / (work.name + "-prefect-home")))
    # a fresh GloVe-subset / skip-thought cache, so the cold run does all of its work
    env.setdefault("MKTN_CACHE_DIR", str(work.parent / (work.name + "-cache")))
    cache = Path(env["MKTN_CACHE_DIR"])
    if cache.exists() and any(cache.iterdir()):
        raise SystemExit(f"MKTN_CACHE_DIR {cache} is not empty: the cold run needs a fresh cache")
    snap = None
    cwd = str(work.parent)
    if args.snapshot:
        snap = tempfile.mkdtemp(prefix="mktn-snapshot-")
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", snap], input=archive.stdout, check=True)
        env["PYTHONPATH"] = snap + os.pathsep + env.get("PYTHONPATH", "")
        cwd = snap
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        print(f"code: git HEAD {commit} exported to {snap}", flush=True)
    work.parent.mkdir(parents=True, exist_ok=True)
    runs = [run_once(work, args.quick, env, cwd)]
    print(f"cold:   {json.dumps(runs[0])}", flush=True)
    for i in range(args.reruns):
        runs.append(run_once(work, args.quick, env, cwd))
        print(f"rerun{i + 1}: {json.dumps(runs[-1])}", flush=True)
    cold = float(runs[0]["wall_s"])  # type: ignore[arg-type]
    for i, r in enumerate(runs[1:], start=1):
        print(f"rerun{i} / cold = {float(r['wall_s']) / cold:.3f}")  # type: ignore[arg-type]
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": args.quick,
              "cpus": os.cpu_count(), "runs": runs}
    (work / "bench-reproduce.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
