"""GloVe streaming and cache benchmark: time and peak RSS of the first pass and of a cached load.

Generates a GloVe-format text file of 2.2M words x 300 dims (the size of
glove.840B.300d's vocabulary; values are 3-character decimals such as ``0.4`` and
``-.7`` so the file is ~2.7 GB rather than 840B's 5.6 GB) into a temporary directory,
with the real vocabulary of Charades-STA train (from ../shared/data) spread over the
file, some of it only in capitalised form and some 840B-style tokens containing
spaces. Then, each in a fresh process so peak RSS (``VmHWM``) is that phase's own:

1. ``first``: the one streaming pass that computes the file's sha256 on the way
   (later runs look it up by size and mtime), keeps the vocabulary's rows and writes
   the subset cache;
2. ``cached``: a later run: digest lookup + loading the subset from the cache.

Targets (issue 4): first pass peak RSS < 1 GB; cached load < 1 s.

    python bench/glove_bench.py [--words 2200000] [--dim 300] [--keep DIR]

The file is deleted afterwards unless ``--keep`` names a directory for it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
_CHUNK = 20_000


def _vocabulary() -> list[str]:
    """The tokens of Charades-STA train (real sentences, our tokenizer)."""
    sys.path.insert(0, str(ROOT))
    from pipeline.text import Tokenizer

    tok = Tokenizer()
    words: set[str] = set()
    path = SHARED / "charades-sta" / "charades_sta_train.txt"
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if "##" in line:
            words.update(tok.tokenize(line.split("##", 1)[1], query_id=str(i)))
    return sorted(words)


def _chunk_bytes(start: int, rows: int, dim: int, rng: np.random.Generator) -> bytes:
    """``rows`` lines ``w%07d v1 ... vD`` with 3-character values, built as one uint8 array."""
    ids = np.arange(start, start + rows)
    token = np.empty((rows, 9), dtype=np.uint8)
    token[:, 0] = ord("w")
    for k in range(7):  # zero-padded decimal index
        token[:, 1 + k] = ord("0") + (ids // 10 ** (6 - k)) % 10
    token[:, 8] = ord(" ")
    vals = np.empty((rows, dim, 4), dtype=np.uint8)
    neg = rng.random((rows, dim)) < 0.5
    vals[:, :, 0] = np.where(neg, ord("-"), ord("0"))
    vals[:, :, 1] = ord(".")
    vals[:, :, 2] = ord("0") + rng.integers(0, 10, (rows, dim), dtype=np.uint8)
    vals[:, :, 3] = ord(" ")
    vals[:, -1, 3] = ord("\n")
    return np.concatenate([token, vals.reshape(rows, dim * 4)], axis=1).tobytes()


def generate(path: Path, words: int, dim: int, vocab: list[str], seed: int = 0) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    n_chunks = -(-words // _CHUNK)
    # every vocabulary word gets a line at a random chunk boundary; every 10th only capitalised
    slots: dict[int, list[str]] = {}
    for i, w in enumerate(vocab):
        slots.setdefault(int(rng.integers(0, n_chunks)), []).append(
            w.capitalize() if i % 10 == 0 else w
        )
    spaced = ["at home", ". . .", "name @ domain"]
    written = 0
    with path.open("wb") as fh:
        for c in range(n_chunks):
            rows = min(
                _CHUNK, words - written - len(slots.get(c, [])) - (len(spaced) if c == 0 else 0)
            )
            for w in slots.get(c, []) + (spaced if c == 0 else []):
                vec = " ".join(f"{x:.3f}" for x in rng.standard_normal(dim))
                fh.write(f"{w} {vec}\n".encode())
                written += 1
            if rows > 0:
                fh.write(_chunk_bytes(written, rows, dim, rng))
                written += rows
    return {"lines": written, "bytes": path.stat().st_size}


def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (its own address space; getrusage's ru_maxrss is kept
    across execve, so a child can report its parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:  # pragma: no cover - not Linux
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _phase(args: argparse.Namespace) -> None:
    """One measured phase, in its own process; prints a JSON line."""
    sys.path.insert(0, str(ROOT))
    from pipeline.word_vectors import load_subset

    vocab = json.loads(Path(args.vocab).read_text())
    out: dict[str, object] = {"phase": args.phase}
    t0 = time.perf_counter()
    kv, info = load_subset(args.path, vocab, cache_dir=args.cache, progress=False)
    out["total_s"] = round(time.perf_counter() - t0, 3)
    out["cache_hit"] = info["cache_hit"]
    out["found"] = len(kv)
    out["lowercase_matches"] = info.get("lowercase_matches")
    out["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", type=int, default=2_200_000)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--keep", help="write the file here and keep it (default: temp dir, deleted)")
    ap.add_argument("--phase", choices=["first", "cached"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    ap.add_argument("--vocab", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        _phase(args)
        return

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="glove-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        vocab = _vocabulary()
        vocab_file = work / "vocab.json"
        vocab_file.write_text(json.dumps(vocab + ["at home", "zzzunseen"]))
        path = work / f"glove.bench.{args.dim}d.txt"
        t0 = time.perf_counter()
        gen = generate(path, args.words, args.dim, vocab)
        gen_s = time.perf_counter() - t0
        cache = work / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        results = []
        for phase in ("first", "cached", "cached"):
            cmd = [
                sys.executable,
                __file__,
                "--phase",
                phase,
                "--path",
                str(path),
                "--cache",
                str(cache),
                "--vocab",
                str(vocab_file),
            ]
            res = subprocess.run(cmd, check=True, capture_output=True, text=True)
            results.append(json.loads(res.stdout.strip().splitlines()[-1]))
        report = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "file": {
                "words": gen["lines"],
                "dim": args.dim,
                "gb": round(gen["bytes"] / 1e9, 2),
                "generate_s": round(gen_s, 1),
            },
            "vocabulary": len(vocab) + 2,
            "phases": results,
        }
        print(json.dumps(report, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
