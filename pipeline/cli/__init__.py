"""The ``mktn`` command line.

Each subcommand lives in its own module under ``pipeline/cli/`` and exposes
``configure(parser: argparse.ArgumentParser) -> None``, which adds its
arguments and calls ``parser.set_defaults(func=run)`` where
``run(args: argparse.Namespace) -> int`` returns the exit status.
Modules are imported only when their command runs, so ``mktn --help`` is fast
and one command's heavy imports (torch, prefect) never slow another.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any

from pipeline import __version__

# name -> (module under pipeline.cli, one-line help). Keep in the order users meet them.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("data", "inspect and validate benchmark annotation files (data stats)"),
    "synth": ("synth", "generate the synthetic raw-video benchmark (mp4 + JSONL)"),
    "extract": ("extract", "decode videos and extract 3D-CNN clip and patch features into a Zarr store"),
    "import-features": ("import_features", "import published clip features (HDF5, .npy/.npz, video_features) into a feature store"),
    "export-features": ("export_features", "write a store's clip features as .npz/.npy files other tools read"),
    "embed": ("embed", "tokenize queries and embed them (GloVe + skip-thought) into a Zarr store"),
    "train": ("train", "train MKTN on a feature store and a query store"),
    "evaluate": ("evaluate", "evaluate a checkpoint: R@1/R@5 at IoU 0.3/0.5/0.7 and mIoU"),
    "evaluate-predictions": ("evaluate_predictions", "score prediction records against annotations"),
    "ablate": ("ablate", "train the full model and each 'w/o' variant; write the ablation table"),
    "sweep-alignment": ("sweep_alignment", "train across alignment strengths; plot accuracy and alignment"),
    "predict": ("predict", "ground queries in a new video with a trained checkpoint"),
    "reproduce": ("reproduce", "raw videos to the final report in one command (Prefect flow)"),
    "serve": ("serve", "serve the Prefect deployments of every flow"),
    "store": ("store", "check / gc: report or remove leftovers of killed writes in a store"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mktn",
        description="Multi-pair temporal sentence grounding with MKTN: features, training, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"mktn {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            mod = importlib.import_module(f"pipeline.cli.{module}")
            mod.configure(p)
    return parser


def _first_command(argv: list[str]) -> str | None:
    for arg in argv:
        if arg in COMMANDS:
            return arg
        if not arg.startswith("-"):
            return None
    return None


# third-party loggers that log one INFO line per HTTP call (httpx, httpcore: a Prefect client
# polling its server, dozens a minute while idle) or per training epoch (gensim's word2vec: 40
# lines per embed); kept at WARNING unless -vv asks for debug output (the project logs its own
# summary of each)
CHATTY_LOGGERS = ("httpx", "httpcore", "gensim")


def quiet_third_party(verbose: int = 0) -> None:
    """Keep :data:`CHATTY_LOGGERS` at WARNING unless ``verbose >= 2`` (``-vv``). Called at start-up
    and again by commands that start Prefect, whose logging set-up may reset them."""
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if verbose < 2 else logging.NOTSET)


def store_write_exit(command: str, exc: OSError, store: object, *, what: str,
                     doing: str = "writing", note: str = "") -> int:
    """For a command's ``except OSError``: print the one line that names an unwritable or full
    store location (:func:`storage.errors.store_write_problem`) and return exit status 2; any
    other ``OSError`` is raised again."""
    from storage.errors import store_write_problem

    problem = store_write_problem(exc, store, what=what, doing=doing)
    if problem is None:
        raise exc
    print(f"mktn {command}: error: {problem}{note}", file=sys.stderr)
    return 2


def add_storage_option_argument(parser: Any) -> None:
    """``--storage-option KEY=VALUE`` (repeatable): the fsspec options of URL store roots."""
    parser.add_argument(
        "--storage-option", dest="storage_options", action="append", default=[],
        metavar="KEY=VALUE",
        help="an fsspec option for URL store roots (s3://...), e.g. endpoint_url=http://host:9000, "
        "anon=false, client_kwargs.region_name=eu-west-1; repeatable, merged over "
        "$MKTN_STORAGE_OPTIONS (a JSON object) and passed on to every process the command starts. "
        "Keep credentials in the filesystem's own sources (AWS_ACCESS_KEY_ID...); docs/deploy.md",
    )


def apply_storage_options(command: str, args: argparse.Namespace) -> bool:
    """Merge the command's ``--storage-option`` flags into ``MKTN_STORAGE_OPTIONS``; False (after
    one line on stderr) when one is malformed."""
    from storage.remote import set_env_storage_options

    try:
        set_env_storage_options(getattr(args, "storage_options", None) or [])
    except ValueError as exc:
        print(f"mktn {command}: error: {exc}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # No telemetry from the Prefect servers our commands start (reproduce's temporary
    # server, serve): nothing leaves the machine unless the user sets these otherwise.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    parser = build_parser(_first_command(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose + 1, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    quiet_third_party(args.verbose)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    if not apply_storage_options(args.command, args):
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
