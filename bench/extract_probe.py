"""What random-init 3D-CNN features keep: linear probes for colour, position and motion.

    python bench/extract_probe.py [--clips 600] [--configs tiny3d:layer3:2:8:8 ...] [--json out.json]

Renders labelled 112x112 clips like the synthetic benchmark's (a textured background
from ``pipeline.synth.render.background_texture``, one object of one of 5 colours in
one of 4 quadrants, doing one of 5 motions: static, move horizontally, move
vertically, grow, spin), at the benchmark's 15 fps, then sampled at each config's
fps. For each config ``backbone:layer:grid:fps:clip_len`` it extracts features exactly
as ``mktn extract`` does (``ClipFeatureExtractor``, float16 round trip as in the store),
standardises them with train-split statistics (as ``model.data.fit_norm_stats`` does) and
fits a multinomial logistic regression on 2/3 of the clips; it reports held-out accuracy
per attribute for the clip feature alone and for clip + patch features, and the
compute cost per clip. Chance: colour 0.20, position 0.25, motion 0.20.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from datetime import UTC, datetime

import numpy as np
import torch

from pipeline.backbones import build_extractor
from pipeline.synth.render import background_texture

SRC_FPS = 15.0
COLOURS = np.array(
    [(225, 35, 35), (35, 185, 60), (35, 75, 235), (245, 225, 30), (150, 55, 205)], np.float32
)
MOTIONS = ("static", "horizontal", "vertical", "grow", "spin")
QUADRANTS = ((0.28, 0.28), (0.72, 0.28), (0.28, 0.72), (0.72, 0.72))


def render_clip(
    rng: np.random.Generator, bg: np.ndarray, colour: int, quadrant: int, motion: int, n: int
) -> np.ndarray:
    """``n`` frames at 15 fps, uint8 [n, 112, 112, 3]."""
    size = bg.shape[0]
    cx, cy = (np.array(QUADRANTS[quadrant]) + rng.uniform(-0.07, 0.07, 2)) * size
    r0 = rng.uniform(9, 14)
    speed = rng.uniform(1.2, 2.5) * rng.choice((-1, 1))
    rgb = np.clip(COLOURS[colour] + rng.uniform(-20, 20, 3), 0, 255)
    square = motion == 4 or rng.random() < 0.5
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = np.empty((n, size, size, 3), np.uint8)
    t_mid = (n - 1) / 2
    for i in range(n):
        dt = i - t_mid
        x = cx + (speed * dt if motion == 1 else 0.0)
        y = cy + (speed * dt if motion == 2 else 0.0)
        r = r0 * (1 + 0.035 * (i - 0) if motion == 3 else 1.0)
        ang = (0.2 * i if motion == 4 else 0.3) * np.sign(speed)
        u, v = xx - x, yy - y
        if square:
            cu, cv = u * math.cos(ang) + v * math.sin(ang), -u * math.sin(ang) + v * math.cos(ang)
            inside = np.clip(r * 0.85 - np.maximum(np.abs(cu), np.abs(cv)) + 0.5, 0, 1)
        else:
            inside = np.clip(r - np.hypot(u, v) + 0.5, 0, 1)
        noise = rng.normal(0, 4, bg.shape).astype(np.float32)
        img = bg * (1 - inside[..., None]) + rgb * inside[..., None] + noise
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def make_dataset(num: int, seed: int, clip_seconds: float) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    bgs = [background_texture(1000 + i, 112) for i in range(24)]
    n = max(2, int(math.ceil(clip_seconds * SRC_FPS)))
    clips, labels = [], []
    for _ in range(num):
        c, q, m = int(rng.integers(5)), int(rng.integers(4)), int(rng.integers(5))
        clips.append(render_clip(rng, bgs[int(rng.integers(len(bgs)))], c, q, m, n))
        labels.append((c, q, m))
    return clips, np.array(labels)


def sample(frames15: np.ndarray, fps: float, clip_len: int) -> np.ndarray:
    idx = np.minimum((np.arange(clip_len) * SRC_FPS / fps).astype(int), len(frames15) - 1)
    return frames15[idx]


def probe_accuracy(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> float:
    xt = torch.from_numpy(x_train).float()
    yt = torch.from_numpy(y_train).long()
    k = int(max(y_train.max(), y_test.max())) + 1
    lin = torch.nn.Linear(xt.shape[1], k)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xt), yt) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = lin(torch.from_numpy(x_test).float()).argmax(1).numpy()
    return float((pred == y_test).mean())


def evaluate(config: str, clips15: list[np.ndarray], labels: np.ndarray, batch: int) -> dict:
    backbone, layer, grid, fps, clip_len, *rest = config.split(":")
    ex = build_extractor(backbone, layer=layer, grid=int(grid))
    if rest:  # tiny3d only: override the temporal-difference gain (0 = RGB alone)
        ex.net.stem[0].gain = float(rest[0])
    inputs = np.stack([sample(c, float(fps), int(clip_len)) for c in clips15])
    feats_c, feats_p = [], []
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for i in range(0, len(inputs), batch):
            out = ex(ex.normalize(torch.from_numpy(inputs[i : i + batch])))
            feats_c.append(out["clip"].numpy())
            feats_p.append(out["patches"].flatten(1).numpy())
    wall = (time.perf_counter() - t0) / len(inputs)
    cpu = (time.process_time() - c0) / len(inputs)
    # the store keeps float16
    fc = np.concatenate(feats_c).astype(np.float16).astype(np.float32)
    fp = np.concatenate(feats_p).astype(np.float16).astype(np.float32)
    n_train = len(labels) * 2 // 3
    result = {"config": config, "dim": fc.shape[1], "wall_s_per_clip": wall, "cpu_s_per_clip": cpu}
    cos = fc / np.linalg.norm(fc, axis=1, keepdims=True)
    result["mean_pairwise_cosine_raw"] = float((cos @ cos.T).mean())
    for name, x in (("clip", fc), ("clip+patches", np.concatenate([fc, fp], 1))):
        mean, std = x[:n_train].mean(0), np.maximum(x[:n_train].std(0), 1e-6)
        z = (x - mean) / std
        for j, attr in enumerate(("colour", "position", "motion")):
            y = labels[:, j]
            result[f"{name}/{attr}"] = probe_accuracy(
                z[:n_train], y[:n_train], z[n_train:], y[n_train:]
            )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clips", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--configs",
        nargs="+",
        default=[
            "tiny3d:layer2+layer3:2:8:8:0",
            "tiny3d:layer3:2:8:8",
            "tiny3d:layer2:2:8:8",
            "tiny3d:layer2+layer3:2:8:8",
            "tiny3d:layer2+layer3:2:15:8",
            "r3d_18:layer3:2:15:16",
        ],
        help="backbone:layer:grid:fps:clip_len[:motion_gain (tiny3d)]",
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    longest = max(int(c.split(":")[4]) / float(c.split(":")[3]) for c in args.configs)
    clips15, labels = make_dataset(args.clips, args.seed, longest)
    rows = []
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, load {os.getloadavg()}, {args.clips} clips"
    )
    for config in args.configs:
        row = evaluate(config, clips15, labels, args.batch)
        row["load_after"] = os.getloadavg()[0]
        rows.append(row)
        print(
            json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
