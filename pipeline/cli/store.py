"""``mktn store check|gc|consolidate``: report (check) or remove (gc) leftovers of killed or failed
writes; (consolidate) rewrite the metadata snapshot of every group of a feature store."""

from __future__ import annotations

import argparse
import json
import os
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action", choices=("check", "gc", "consolidate"),
        help="check: report leftovers; gc: remove them; consolidate: rewrite the metadata snapshot "
        "of every (dataset, extractor) group of a feature store, a local path or a URL "
        "(docs/features.md, 'Remote stores')",
    )
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
    from pipeline.cli import add_storage_option_argument

    add_storage_option_argument(parser)
    parser.set_defaults(func=run)


def consolidate(args: argparse.Namespace) -> int:
    from storage.features import FeatureStore
    from storage.remote import is_remote_root

    report: dict[str, list[str]] = {}
    for root in args.store:
        local = root[len("file://"):] if root.startswith("file://") else root
        if not is_remote_root(root) and not os.path.isdir(local):
            print(f"mktn store: {root} does not exist; nothing to consolidate", file=sys.stderr)
            return 2
        try:
            store = FeatureStore(root)
            groups = store.list_extractors()
            for dataset, extractor_id in groups:
                store.consolidate(dataset, extractor_id, force=True)
        except (ValueError, OSError) as exc:
            print(f"mktn store: error: {root}: {exc}", file=sys.stderr)
            return 2
        report[root] = [f"{d}/{e}" for d, e in groups]
        if not args.json:
            names = ", ".join(report[root]) or "none (not a feature store?)"
            print(f"{root}: consolidated {len(groups)} group(s): {names}")
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def run(args: argparse.Namespace) -> int:
    from storage.cleanup import as_dicts, find_leftovers, remove_leftovers

    if args.action == "consolidate":
        return consolidate(args)

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
