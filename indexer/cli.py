"""`xmodal-index`: thin commands over indexer.operations / indexer.reindex."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from indexer.pipeline import IndexOptions
from indexer.readers import ColumnMap
from search import (
    FusionMethod,
    MediaMode,
    RemotePolicy,
    SearchMode,
    Settings,
    Workspace,
    XmodalError,
    maintain,
    migrate_catalog,
)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--collection", "-c", required=True, help="collection name")
    parser.add_argument("--home", type=Path, help="XMODAL_HOME (default from settings)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_parser(sub) -> None:
    p = sub.add_parser("add", help="index a folder, a JSONL/CSV/Parquet catalog or a text "
                                   "file into a collection (idempotent, resumable)")
    p.add_argument("source", help="folder, .jsonl, .csv, .parquet or .txt: a path, or with "
                                  "--engine ray also a URI (s3://, gs://, file://...)")
    _common(p)
    p.add_argument("--model", help="model for a new collection (default from settings)")
    p.add_argument("--pretrained", help="weights tag or local file for a new collection")
    p.add_argument("--batch-size", type=int, default=64, help="encoder batch (default 64)")
    p.add_argument("--workers", type=int, default=2, help="decode processes (0 = inline)")
    p.add_argument("--engine", choices=["local", "ray"], default="local")
    p.add_argument("--ray-address", help="Ray cluster address (default: local Ray)")
    p.add_argument("--prune", action="store_true", help="delete items gone from the source")
    p.add_argument("--strict", action="store_true", help="exit 1 on any failed item")
    p.add_argument("--id-column", default="id", help="catalog id column (default id)")
    p.add_argument("--text-column", help="text column(s), comma-separated (default: "
                                         "text/title/caption/description/name)")
    p.add_argument("--image-column", help="image path column (default: image/image_path/…)")
    p.add_argument("--report", type=Path, help="failure report file (JSONL)")
    p.add_argument("--generate-missing", action="store_true",
                   help="generate an image for items that have text but no image")
    p.add_argument("--generator", default="house", help="image generator backend "
                                                        "(house or diffusers)")
    p.add_argument("--generator-model", help="diffusers hub id or local path")
    p.add_argument("--follow-external-symlinks", action="store_true",
                   help="read images and captions whose symlink leads outside the source's "
                        "folder (refused by default)")
    p.add_argument("--media", choices=[m.value for m in MediaMode], default="copy",
                   help="copy images into the media store (default), or store a reference "
                        "to where they are (served only from XMODAL_MEDIA_ROOTS)")
    p.add_argument("--fetch-allow-private", action="store_true",
                   help="fetch image URLs whose host resolves to a loopback, private or "
                        "link-local address (refused by default: SSRF guard)")
    p.add_argument("--fetch-hosts", help="comma-separated hosts image URLs may name "
                                         "('cdn.example.com', '*.example.com', 'host:8080'); "
                                         "default: any public host")
    p.add_argument("--fetch-timeout", type=float, default=RemotePolicy.timeout_s,
                   help=f"seconds per image URL, redirects and body included "
                        f"(default {RemotePolicy.timeout_s:g})")
    p.add_argument("--fetch-threads", type=int, default=RemotePolicy.threads,
                   help=f"concurrent image URL fetches per decode process "
                        f"(default {RemotePolicy.threads})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _names(value: str) -> list[str]:
    """A comma-separated list of field names ('' is none)."""
    return [n.strip() for n in value.split(",") if n.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xmodal-index",
                                     description="Batch indexing of image and text corpora.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_parser(sub)
    p = sub.add_parser("delete", help="remove items from a collection and from search")
    p.add_argument("ids", nargs="+", help="external ids")
    _common(p)
    p = sub.add_parser("reindex", help="rebuild the index from stored embeddings, or "
                                       "re-embed everything with --model; switches atomically")
    _common(p)
    p.add_argument("--model", help="re-embed with this model (architecture or directory)")
    p.add_argument("--pretrained", help="weights tag or local file for --model")
    p.add_argument("--spec", help="FAISS factory string for the rebuilt index")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("status", help="counts, index versions, last jobs, recent failures")
    _common(p)
    p = sub.add_parser("settings", help="show or declare the attributes keyword search reads "
                                        "and the identifier attributes (rebuilds the "
                                        "collection's keyword index)")
    _common(p)
    p.add_argument("--searchable-fields", type=_names, metavar="A,B",
                   help="attributes keyword search reads besides the text ('*': every "
                        "string and list-of-strings attribute, the default)")
    p.add_argument("--identifier-fields", type=_names, metavar="A,B",
                   help="attributes whose exact value ranks an item first (default sku,gtin; "
                        "'' for none)")
    p = sub.add_parser("compact", help="compact embedding logs now, collect unreferenced "
                                       "media and trim the thumbnail cache (servers do this "
                                       "by themselves every XMODAL_MAINTENANCE_INTERVAL_S)")
    p.add_argument("--collection", "-c", action="append", dest="collections",
                   help="only this collection (repeatable; default: all)")
    p.add_argument("--home", type=Path, help="XMODAL_HOME (default from settings)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-media", action="store_true", help="leave media and thumbnails alone")
    p = sub.add_parser("migrate", help="bring the catalog schema to this release (run once per "
                                       "release, before serving; safe to run concurrently)")
    p.add_argument("--home", type=Path, help="XMODAL_HOME (default from settings)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _train_parsers(sub)
    return parser


def _train_parsers(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a CLIP on the collection's image-text pairs "
                                     "(resumable: re-run the same command to continue)")
    _common(p)
    p.add_argument("--out", type=Path, required=True, help="output model directory")
    p.add_argument("--from", dest="source", help="MODEL[/PRETRAINED] to start from (default: "
                                                 "the collection's model; house/random: "
                                                 "from scratch)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4; "
                                                          "1e-3 from scratch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout-percent", type=int, default=0,
                   help="leave this share of items (by id hash) out, for `eval`")
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("eval", help="text->image and image->text recall of the collection's "
                                    "model (and of --model candidates) on its own items")
    _common(p)
    p.add_argument("--model", action="append", default=[], dest="models",
                   help="also evaluate MODEL[/PRETRAINED] or a model directory (repeatable)")
    p.add_argument("--holdout-percent", type=int, default=0,
                   help="evaluate on the slice `train --holdout-percent` left out")
    p.add_argument("--limit", type=int, default=5000, help="at most this many items")
    p.add_argument("--out", type=Path, help="also write the result as JSON here")
    p.add_argument("--queries", type=Path, metavar="FILE",
                   help="instead: rank quality (R@10, MRR@10, nDCG@10) of search modes on "
                        "a judged query set (JSONL: query, type, relevant)")
    p.add_argument("--mode", action="append", dest="modes",
                   choices=["vector", "keyword", "hybrid"],
                   help="with --queries: the mode(s) to evaluate (repeatable; default all)")
    p.add_argument("--fusion", choices=[m.value for m in FusionMethod],
                   help="with --queries: hybrid's fusion (default: the engine's)")
    p.add_argument("--alpha", type=float, help="with --queries: weighted fusion's vector share")
    p.add_argument("--rrf-k", type=int, help="with --queries: reciprocal rank fusion's k")


def _options(args: argparse.Namespace) -> IndexOptions:
    return IndexOptions(batch_size=args.batch_size, workers=getattr(args, "workers", 0),
                        prune=getattr(args, "prune", False),
                        strict=getattr(args, "strict", False),
                        progress=not args.no_progress, report_path=getattr(args, "report", None),
                        generate_missing=getattr(args, "generate_missing", False),
                        generator=getattr(args, "generator", "house"),
                        generator_model=getattr(args, "generator_model", None),
                        follow_external_symlinks=getattr(args, "follow_external_symlinks",
                                                         False),
                        media=MediaMode(getattr(args, "media", "copy")),
                        remote=_remote_policy(args))


def _remote_policy(args: argparse.Namespace) -> RemotePolicy:
    hosts = getattr(args, "fetch_hosts", None)
    return RemotePolicy(
        hosts=tuple(h.strip() for h in hosts.split(",") if h.strip()) if hosts else None,
        allow_private=getattr(args, "fetch_allow_private", False),
        timeout_s=getattr(args, "fetch_timeout", RemotePolicy.timeout_s),
        threads=max(1, getattr(args, "fetch_threads", RemotePolicy.threads)))


def _run(args: argparse.Namespace, workspace: Workspace) -> tuple[Any, int]:
    from indexer import operations, reindex

    if args.command == "add":
        text = tuple(c.strip() for c in args.text_column.split(",")) if args.text_column else ()
        columns = ColumnMap(args.id_column, text, args.image_column)
        summary = operations.index_source(
            workspace, args.collection, args.source, columns=columns, options=_options(args),
            model=args.model, pretrained=args.pretrained, engine=args.engine,
            ray_address=args.ray_address)
        return summary, summary.exit_code(args.strict)
    if args.command == "delete":
        return operations.delete_items(workspace, args.collection, args.ids), 0
    if args.command == "reindex" and args.model:
        return reindex.reindex_model(workspace, args.collection, args.model, args.pretrained,
                                     _options(args)), 0
    if args.command == "reindex":
        return reindex.rebuild_index(workspace, args.collection, args.spec), 0
    if args.command == "settings":
        return operations.search_fields(workspace, args.collection, args.searchable_fields,
                                        args.identifier_fields), 0
    if args.command == "compact":
        report = maintain(workspace, collections=args.collections, force_compaction=True,
                          media=not args.no_media)
        return asdict(report), 1 if report.errors else 0
    if args.command in ("train", "eval"):
        return _run_training(args, workspace), 0
    return operations.collection_status(workspace, args.collection), 0


def _run_training(args: argparse.Namespace, workspace: Workspace) -> Any:
    from indexer import training

    if args.command == "train":
        return training.train_on_collection(
            workspace, args.collection, args.out, source=args.source, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, seed=args.seed,
            holdout_percent=args.holdout_percent, progress=not args.no_progress)
    if args.queries:
        return _run_search_eval(args, workspace)
    result = training.evaluate_collection(workspace, args.collection, models=args.models,
                                          holdout_percent=args.holdout_percent,
                                          limit=args.limit)
    return _eval_output(args, result, training.format_eval)


def _eval_output(args: argparse.Namespace, result: Any, table: Callable[[Any], str]) -> Any:
    """`--out` gets the JSON; the terminal a table, or the result itself with `--json`."""
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    if not args.json:
        print(table(result))
        return None
    return result


def _run_search_eval(args: argparse.Namespace, workspace: Workspace) -> Any:
    from indexer import search_eval

    modes = [SearchMode(m) for m in args.modes or ["vector", "keyword", "hybrid"]]
    fusion = {"fusion_method": FusionMethod(args.fusion) if args.fusion else None,
              "alpha": args.alpha, "rrf_k": args.rrf_k}
    result = search_eval.evaluate_modes(
        workspace, args.collection, search_eval.load_queries(args.queries), modes,
        **{k: v for k, v in fusion.items() if v is not None})
    return _eval_output(args, result, search_eval.format_table)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings(home=args.home) if args.home else Settings()
    if args.command == "migrate":  # before Workspace.open, which may refuse an old schema
        return _print(args, migrate_catalog(settings.resolved_database_url()).as_dict(), 0)
    try:
        workspace = Workspace.open(settings)
        result, code = _run(args, workspace)
    except XmodalError as exc:
        print(f"xmodal-index: {exc}", file=sys.stderr)
        return 2
    return _print(args, result, code)


def _print(args: argparse.Namespace, result: Any, code: int) -> int:
    from indexer import render  # imports the library calls: not needed for --help

    if args.json:
        print(render.dumps(result))
    elif result is not None:
        # plain text when piped; rich only adds styling on a terminal
        Console(highlight=False, soft_wrap=True, emoji=False).print(render.render(result),
                                                                    markup=False)
    return code


if __name__ == "__main__":
    sys.exit(main())
