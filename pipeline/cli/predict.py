"""``mktn predict``: ground sentences in a new video with a trained checkpoint."""

from __future__ import annotations

import argparse
import json
import os
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", required=True, help="the video file")
    parser.add_argument("--query", dest="queries", action="append", required=True, metavar="TEXT",
                        help="a sentence to ground (repeatable)")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint from `mktn train` (best.pt)")
    parser.add_argument("--top-k", type=int, default=5, help="spans per query (default 5)")
    parser.add_argument("--plot", default=None, metavar="PNG",
                        help="draw the timeline: the video's frames above each query's ranked spans")
    parser.add_argument("--html", default=None, metavar="OUT.html",
                        help="write one page: the video's player over each query's ranked spans "
                             "(click a span to play from its start); open it from its folder")
    parser.add_argument("--weights", default=None, help="the backbone weights file, if the features used one")
    parser.add_argument("--skipthought", default=None, help="skip-thought weights, if moved since `mktn embed`")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.predict import plot_grounding, predict_video, write_grounding_html

    for out in (args.plot, args.html):
        if out and os.path.isdir(out):
            print(f"mktn predict: error: {out!r} is a folder; give a file name (e.g. {out}/moments.html)",
                  file=sys.stderr)
            return 2
    try:
        result = predict_video(args.checkpoint, args.video, args.queries, device=args.device,
                               weights=args.weights, skipthought=args.skipthought, top_k=args.top_k)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"mktn predict: error: {exc}", file=sys.stderr)
        return 2
    for out, write in ((args.plot, plot_grounding), (args.html, write_grounding_html)):
        if out:
            try:
                write(result, out)
            except OSError as exc:
                print(f"mktn predict: error: cannot write {out!r}: {exc.strerror or exc}; "
                      "give a path in a writable folder", file=sys.stderr)
                return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"{result.video} ({result.duration:.2f} s)")
    for q, spans, scores in zip(result.queries, result.spans, result.scores, strict=True):
        print(f"  {q!r}")
        for rank, ((s, e), sc) in enumerate(zip(spans, scores, strict=True), 1):
            print(f"    {rank}. {s:7.2f} - {e:7.2f} s   score {sc:.3f}")
    if args.plot:
        print(f"plot: {args.plot}")
    if args.html:
        print(f"page: {args.html}")
    return 0
