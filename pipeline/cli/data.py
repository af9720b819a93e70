"""``mktn data``: inspect and validate benchmark annotation files.

``mktn data stats --format F --annotations [SPLIT=]PATH ... [--durations CSV ...]
[--split NAME] [--inverted drop|swap] [--strict] [--json] [--max-issues N]`` prints
pairs, videos and the count of every fix-up and rejection (a table, or JSON with
``--json``); exit 0 on success, 2 with a message naming the file on a bad file or format.
``mktn data formats`` lists the formats and the fix-up / rejection reasons.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pipeline.datasets import (
    FIXUP_REASONS,
    FORMATS,
    REJECTION_REASONS,
    DatasetError,
    LoadResult,
    load_annotations,
    load_splits,
    parse_split_arg,
    parse_split_args,
)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    stats = sub.add_parser(
        "stats",
        help="pairs, videos and every fix-up/rejection of annotation files",
        description="Parse and validate annotation files; print pairs, videos, fix-ups and rejections.",
    )
    stats.add_argument(
        "--format",
        "-f",
        default="auto",
        choices=["auto", *sorted(FORMATS)],
        help="annotation format (default: guessed from the file's content)",
    )
    stats.add_argument(
        "--annotations",
        "-a",
        nargs="+",
        required=True,
        metavar="PATH",
        help="annotation file(s), each PATH or SPLIT=PATH; several files are one dataset "
        "(a bare PATH's split comes from its file name)",
    )
    stats.add_argument(
        "--durations",
        nargs="+",
        metavar="CSV",
        help="video durations (Charades_v1_*.csv or any id,length CSV / JSON); "
        "Charades-STA looks for Charades_v1_<split>.csv beside the file by default",
    )
    stats.add_argument("--split", help="split label for a single file (default: from its name)")
    stats.add_argument(
        "--inverted",
        choices=["drop", "swap"],
        default="drop",
        help="entries with end < start: drop them (default) or swap start and end",
    )
    stats.add_argument("--strict", action="store_true", help="fail on the first malformed entry")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.add_argument(
        "--max-issues",
        type=int,
        default=20,
        metavar="N",
        help="list at most N issues per reason (default 20; 0 lists none, -1 all)",
    )
    sub.add_parser("formats", help="list the annotation formats and the fix-up/rejection reasons")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.data_command == "formats":
        return _formats()
    if args.data_command != "stats":
        print("usage: mktn data {stats,formats} ... (see mktn data stats --help)", file=sys.stderr)
        return 2
    try:
        result = _load(args)
    except DatasetError as e:
        print(f"mktn data stats: error: {e}", file=sys.stderr)
        return 2
    cap = None if args.max_issues < 0 else args.max_issues
    summary = stats_dict(result, max_issues_per_reason=cap)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_table(summary))
    return 0


def _load(args: argparse.Namespace) -> LoadResult:
    fmt = None if args.format == "auto" else args.format
    paths: list[str] = args.annotations
    if len(paths) == 1:
        split, path = parse_split_arg(paths[0])
        return load_annotations(
            fmt,
            path,
            durations=args.durations,
            split=args.split or split,
            inverted=args.inverted,
            strict=args.strict,
        )
    if args.split:
        raise DatasetError(
            "--split names the split of a single file; with several files write SPLIT=PATH"
        )
    return load_splits(
        fmt,
        parse_split_args(paths),
        durations=args.durations,
        inverted=args.inverted,
        strict=args.strict,
    )


def stats_dict(result: LoadResult, max_issues_per_reason: int | None = 20) -> dict[str, Any]:
    """The report as JSON-ready data, with pairs and videos per split."""
    out = result.report.to_dict(max_issues_per_reason)
    out["splits"] = {
        name: {"pairs": len(recs), "videos": len({r.video_id for r in recs})}
        for name, recs in result.by_split().items()
    }
    return out


def format_table(s: dict[str, Any]) -> str:
    lines = [
        f"format     {s['format']}",
        f"files      {', '.join(s['files'])}",
        f"durations  {', '.join(s['durations']) or '(from the annotation file)'}",
        f"inverted   {s['inverted']}",
        "",
        f"{'':24}{'read':>10}{'kept':>10}",
        f"{'pairs':24}{s['pairs']['read']:>10}{s['pairs']['kept']:>10}",
        f"{'videos':24}{s['videos']['read']:>10}{s['videos']['kept']:>10}",
    ]
    for name, c in s["splits"].items():
        lines.append(f"  split {name:16}{'':>10}{c['pairs']:>10}  ({c['videos']} videos)")
    for title, counts, kind in (
        ("fix-ups (kept)", s["fixups"], "fixup"),
        ("rejections (dropped)", s["rejections"], "rejection"),
    ):
        lines += ["", f"{title}: {sum(counts.values())}"]
        for reason, n in counts.items():
            lines.append(f"  {reason:22}{n:>10}")
            for issue in s["issues"]:
                if issue["kind"] == kind and issue["reason"] == reason:
                    lines.append(
                        f"      {issue['where']}  [{issue['video_id']}]  {issue['detail']}"
                    )
    if s["issues_listed"] < s["issues_total"]:
        lines += [
            "",
            f"({s['issues_listed']} of {s['issues_total']} issues listed; --max-issues -1 lists all)",
        ]
    return "\n".join(lines)


def _formats() -> int:
    print("formats:")
    for name, spec in sorted(FORMATS.items()):
        print(f"  {name:14}{spec.description}")
    print("\nfix-ups (entry kept):")
    for reason, text in FIXUP_REASONS.items():
        print(f"  {reason:22}{text}")
    print("\nrejections (entry dropped):")
    for reason, text in REJECTION_REASONS.items():
        print(f"  {reason:22}{text}")
    return 0
