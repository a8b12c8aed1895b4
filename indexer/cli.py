"""`xmodal-index`: thin commands over indexer.operations / indexer.reindex."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from indexer.pipeline import IndexOptions
from indexer.readers import ColumnMap
from search.errors import XmodalError
from search.settings import Settings
from search.workspace import Workspace


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--collection", "-c", required=True, help="collection name")
    parser.add_argument("--home", type=Path, help="XMODAL_HOME (default from settings)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_parser(sub) -> None:
    p = sub.add_parser("add", help="index a folder, a JSONL/CSV/Parquet catalog or a text "
                                   "file into a collection (idempotent, resumable)")
    p.add_argument("source", type=Path, help="folder, .jsonl, .csv, .parquet or .txt")
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


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
    return parser


def _options(args: argparse.Namespace) -> IndexOptions:
    return IndexOptions(batch_size=args.batch_size, workers=getattr(args, "workers", 0),
                        prune=getattr(args, "prune", False),
                        strict=getattr(args, "strict", False),
                        progress=not args.no_progress, report_path=getattr(args, "report", None),
                        generate_missing=getattr(args, "generate_missing", False),
                        generator=getattr(args, "generator", "house"),
                        generator_model=getattr(args, "generator_model", None))


def _run(args: argparse.Namespace, workspace: Workspace) -> tuple[Any, int]:
    from indexer import operations, reindex

    if args.command == "add":
        text = tuple(c.strip() for c in args.text_column.split(",")) if args.text_column else ()
        columns = ColumnMap(args.id_column, text, args.image_column)
        summary = operations.index_source(
            workspace, args.collection, args.source, columns=columns, options=_options(args),
            model=args.model, pretrained=args.pretrained, engine=args.engine,
            ray_address=args.ray_address)
        return summary.as_dict(), summary.exit_code(args.strict)
    if args.command == "delete":
        return operations.delete_items(workspace, args.collection, args.ids), 0
    if args.command == "reindex" and args.model:
        return reindex.reindex_model(workspace, args.collection, args.model, args.pretrained,
                                     _options(args)), 0
    if args.command == "reindex":
        return reindex.rebuild_index(workspace, args.collection, args.spec), 0
    return operations.collection_status(workspace, args.collection), 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings(home=args.home) if args.home else Settings()
    try:
        workspace = Workspace.open(settings)
        result, code = _run(args, workspace)
    except XmodalError as exc:
        print(f"xmodal-index: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        Console().print(result)
    return code


if __name__ == "__main__":
    sys.exit(main())
