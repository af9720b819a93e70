"""``mktn embed``: tokenize a dataset's queries and embed them into the Zarr query store.

``mktn embed --annotations [SPLIT=]PATH ... --store PATH [--format F] [--dataset NAME]
[--glove FILE] [--skipthought train|DIR|CKPT] [--max-len N] ...`` prints a summary
(queries, vocabulary, OOV words, truncations, the store group); exit 0 on success,
2 with a message naming the file or query on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from pipeline.datasets import FORMATS, DatasetError, load_annotations, parse_split_arg, sniff_format
from pipeline.datasets.records import QueryMoment

logger = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a(
        "--annotations",
        "-a",
        nargs="+",
        required=True,
        metavar="PATH",
        help="annotation file(s), each PATH or SPLIT=PATH; several files are one dataset",
    )
    a(
        "--format",
        "-f",
        default="auto",
        choices=["auto", *sorted(FORMATS)],
        help="annotation format (default: guessed from the first file's content)",
    )
    a("--durations", nargs="+", metavar="CSV", help="video durations (Charades_v1_*.csv ...)")
    a("--store", required=True, help="query store root: a path or an fsspec URL")
    from pipeline.cli import add_storage_option_argument

    add_storage_option_argument(parser)
    a("--dataset", help="dataset name in the store (default: the annotation format's name)")
    a(
        "--glove",
        metavar="FILE",
        help="GloVe / word2vec / gensim vectors (default: word2vec trained on the training split, "
        "recorded as not comparable to published results)",
    )
    a(
        "--glove-format",
        default="auto",
        choices=["auto", "glove", "word2vec", "word2vec-binary", "gensim"],
    )
    a(
        "--trust-pickle",
        action="store_true",
        help="read a gensim .kv/.model --glove file: it is a pickle and can run code, so only "
        "for a file you trust (default: refused; convert it to word2vec text, docs/queries.md)",
    )
    a(
        "--identity-fraction",
        type=float,
        default=0.5,
        metavar="F",
        help="without --glove: this share of the 300 dimensions is a per-word identity code, the "
        "rest word2vec trained on the training split (default 0.5; 0 = word2vec only)",
    )
    a(
        "--oov",
        choices=["random", "zeros"],
        default="random",
        help="vectors of words missing from the file: seeded per-word random (default) or zeros",
    )
    a("--cache-dir", help="GloVe subset / digest cache (default $MKTN_CACHE_DIR or ~/.cache/mktn)")
    a(
        "--skipthought",
        default="train",
        metavar="train|DIR|CKPT",
        help="'train' (default: train on the dataset's ordered sentences), a directory with the "
        "original release files, or a checkpoint written by an earlier run",
    )
    a(
        "--skipthought-mode",
        choices=["uni", "bi", "combine"],
        default="combine",
        help="uni-skip, bi-skip or both concatenated (default combine)",
    )
    a(
        "--skipthought-preset",
        choices=["demo", "paper"],
        default="demo",
        help="sizes for training: demo (300-d words, 256 uni + 2x128 bi, CPU-friendly) or paper "
        "(620-d words, 2400 uni + 2x1200 bi)",
    )
    a("--skipthought-epochs", type=int, help="training epochs (default: the preset's)")
    a("--checkpoint-dir", help="skip-thought training checkpoints (default: beside the cache)")
    a("--max-len", type=int, default=50, help="maximum tokens per query; longer ones are cut")
    a("--train-split", default="train", help="split the default vectors and encoder learn from")
    a(
        "--document-order",
        choices=["auto", "start", "file"],
        default="auto",
        help="order of a video's sentences for skip-thought (auto: file order for ActivityNet "
        "paragraphs, start time otherwise)",
    )
    a(
        "--no-expand-vocab",
        action="store_true",
        help="do not map GloVe-only words into the encoder's word tables",
    )
    a("--seed", type=int, default=0)
    a("--device", help="cpu or cuda[:N] (default: cuda when available)")
    a("--overwrite", action="store_true", help="rewrite a complete group with the same inputs")
    a("--json", action="store_true", help="print the summary as JSON")
    a("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def _load(args: argparse.Namespace) -> tuple[list[QueryMoment], str]:
    records: list[QueryMoment] = []
    args.rejections = {}  # reason -> count of annotation entries dropped while loading
    seen: set[str] = set()
    fmt = args.format
    # every value parsed (and its file checked) before any is loaded
    for split, path in [parse_split_arg(item) for item in args.annotations]:
        if fmt == "auto":
            fmt = sniff_format(path)
        res = load_annotations(
            fmt, path, durations=args.durations, split=split, seen_query_ids=seen
        )
        records.extend(res.records)
        for reason, count in res.report.rejections.items():
            args.rejections[reason] = args.rejections.get(reason, 0) + count
    return records, fmt


def run(args: argparse.Namespace) -> int:
    from pipeline.cli import store_write_exit
    from pipeline.embed import EmbedConfig, embed_queries
    from pipeline.skipthought import build_skipthought_config
    from pipeline.text import QueryTextError, TextConfig
    from pipeline.word_vectors import GloveFormatError, WordVectorsConfig
    from storage.errors import probe_writable
    from storage.queries import QueryStore

    if getattr(args, "verbose", 0) < 2:  # gensim logs every word2vec epoch at INFO
        logging.getLogger("gensim").setLevel(logging.WARNING)
    try:
        records, fmt = _load(args)
        overrides: dict[str, object] = {"mode": args.skipthought_mode, "seed": args.seed}
        if args.skipthought_epochs is not None:
            overrides["epochs"] = args.skipthought_epochs
        order = args.document_order
        if order == "auto":
            order = "file" if fmt == "activitynet" else "start"
        config = EmbedConfig(
            dataset=args.dataset or fmt,
            text=TextConfig(max_len=args.max_len),
            vectors=WordVectorsConfig(
                path=args.glove,
                fmt=args.glove_format,
                cache_dir=args.cache_dir,
                oov=args.oov,
                identity_fraction=args.identity_fraction,
                seed=args.seed,
                trust_pickle=args.trust_pickle,
            ),
            skipthought=args.skipthought,
            skipthought_mode=args.skipthought_mode,
            skipthought_config=build_skipthought_config(args.skipthought_preset, **overrides),
            expand_vocab=not args.no_expand_vocab,
            train_split=args.train_split,
            document_order=order,
            checkpoint_dir=args.checkpoint_dir,
            overwrite=args.overwrite,
            device=args.device,
            progress=not args.no_progress,
        )
        store = QueryStore(args.store)
        probe_writable(args.store)  # a read-only store: now, not after the encoder is trained
        summary = embed_queries(records, store, config)
    except (DatasetError, GloveFormatError, QueryTextError, FileNotFoundError, ValueError) as exc:
        print(f"mktn embed: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only or full store location: one line, not a traceback
        return store_write_exit("embed", exc, args.store, what="query store")
    rejected = sum(args.rejections.values())
    if args.json:
        out = dataclasses.asdict(summary)
        # entries dropped while reading the annotation files (``skipped`` counts the
        # queries the text stage dropped afterwards)
        out["annotations_rejected"] = rejected
        out["annotations_rejected_by_reason"] = dict(sorted(args.rejections.items()))
        print(json.dumps(out, indent=2))
    else:
        print(summary)
        if rejected:
            print(f"  rejected {rejected} annotation entries while loading: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(args.rejections.items())))
    return 0
