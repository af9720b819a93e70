"""``mktn store check|gc``: report (check) or remove (gc) leftovers of killed or failed writes."""

from __future__ import annotations

import argparse
import json
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("check", "gc"), help="check: report; gc: remove")
    parser.add_argument(
        "--store",
        action="append",
        required=True,
        metavar="PATH",
        help="a feature/query store or a runs folder (repeatable)",
    )
    parser.add_argument(
        "--min-age",
        type=float,
        default=600.0,
        help="temporary files younger than this (seconds) may be in use: never removed "
        "(default 600)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from storage.cleanup import as_dicts, find_leftovers, remove_leftovers

    report: dict[str, object] = {}
    total = 0
    for root in args.store:
        try:
            items = find_leftovers(root, min_age=args.min_age)
        except FileNotFoundError:
            print(f"mktn store: {root} does not exist; nothing to check", file=sys.stderr)
            return 2
        removed = remove_leftovers(items) if args.action == "gc" else []
        total += len(items)
        report[root] = {"leftovers": as_dicts(items), "removed": len(removed)}
        if not args.json:
            verb = "removed" if args.action == "gc" else "found"
            count = len(removed) if args.action == "gc" else len(items)
            print(f"{root}: {verb} {count} leftover(s)")
            for item in items:
                gone = args.action == "gc" and item.removable
                mark = "removed" if gone else ("kept: " + item.why if item.why else "removable")
                print(f"  {item.kind:18s} {item.path} ({item.age_s:.0f} s old; {mark})")
    if args.json:
        print(json.dumps(report, indent=2))
    return 1 if args.action == "check" and total else 0
