"""`xmodal-search`: a thin command over `Searcher.search`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from search.engine import Searcher
from search.errors import XmodalError
from search.facets import parse_facets
from search.filters import parse_filters
from search.query import (
    FusionMethod,
    Hit,
    QueryPart,
    SearchMode,
    SearchQuery,
    SearchResult,
    Target,
)
from search.settings import Settings
from search.workspace import Workspace


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xmodal-search",
        description="Search a collection by text and/or image; prints a ranked table.")
    parser.add_argument("query", nargs="?", help="query text")
    parser.add_argument("--collection", "-c", required=True, help="collection name")
    parser.add_argument("--image", type=Path, help="query image file (with or without text)")
    parser.add_argument("-k", type=int, default=10, help="number of hits (default 10)")
    parser.add_argument("--offset", type=int, default=0, help="skip this many hits")
    parser.add_argument("--target", choices=[t.value for t in Target], default="any",
                        help="modality of the hits' vectors (default any)")
    parser.add_argument("--filter", dest="filters", metavar="JSON",
                        help='attribute filters, e.g. \'{"price": {"lte": 20}}\'')
    parser.add_argument("--min-score", type=float, help="drop hits scoring below this")
    parser.add_argument("--dedupe", type=float, metavar="COS",
                        help="collapse near-duplicates at this cosine")
    parser.add_argument("--nprobe", type=int, help="IVF lists to probe (default 32)")
    parser.add_argument("--no-generated", dest="include_generated", action="store_false",
                        help="match real pictures only, not ones generated from texts")
    parser.add_argument("--mode", choices=[m.value for m in SearchMode],
                        help="vector, keyword (lexical index, no encoder) or hybrid (both, "
                             "fused); default: hybrid for text, vector otherwise")
    parser.add_argument("--fusion", choices=[f.value for f in FusionMethod],
                        default="weighted",
                        help="hybrid fusion: weighted (default; see --alpha) or rrf")
    parser.add_argument("--rrf-k", type=int, default=60, help="RRF constant (default 60)")
    parser.add_argument("--alpha", type=float, default=0.1,
                        help="weighted fusion: share of the vector side (default 0.1)")
    parser.add_argument("--facet", dest="facets", action="append", metavar="FIELD|JSON",
                        help='count values of an attribute (repeatable); JSON for ranges: '
                             '\'{"field": "price", "ranges": [[0, 10], [10, null]]}\'')
    parser.add_argument("--home", type=Path, help="XMODAL_HOME (default from settings)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def query_from_args(args: argparse.Namespace) -> SearchQuery:
    parts = []
    if args.query:
        parts.append(QueryPart(text=args.query))
    if args.image:
        parts.append(QueryPart(image=args.image))
    filters = tuple(parse_filters(json.loads(args.filters))) if args.filters else ()
    facets = [json.loads(f) if f.lstrip().startswith("{") else f for f in args.facets or []]
    return SearchQuery(args.collection, tuple(parts), target=Target(args.target), k=args.k,
                       offset=args.offset, filters=filters, min_score=args.min_score,
                       dedupe=args.dedupe, nprobe=args.nprobe,
                       include_generated=args.include_generated,
                       mode=SearchMode(args.mode) if args.mode else None,
                       fusion_method=FusionMethod(args.fusion), rrf_k=args.rrf_k,
                       alpha=args.alpha, facets=tuple(parse_facets(facets)))


def attribute_lines(attributes: dict[str, Any]) -> list[str]:
    """`key: value`, Unicode as is; nested values as compact JSON."""
    return [f"{key}: {value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}"
            for key, value in attributes.items()]


def render(result: SearchResult, console: Console) -> None:
    """A table on a terminal; plain lines when piped (no escape codes, nothing cut)."""
    mode = f", {result.mode.value}" if result.mode else ""
    title = f"{len(result.hits)} hits ({result.total_considered} considered{mode})"
    timings = " ".join(f"{k}={v:.1f}" for k, v in result.timings_ms.items())
    facets = [f"{facet.field} ({result.facet_scope}): "
              + ", ".join(f"{b.value}: {b.count}" for b in facet.buckets)
              for facet in result.facets]
    if not console.is_terminal:
        lines = [title, *(line for rank, hit in enumerate(result.hits, 1)
                          for line in _hit_lines(rank, hit)), *facets, timings]
        console.print("\n".join(lines), markup=False, highlight=False, emoji=False,
                      soft_wrap=True)
        return
    table = Table(title=title)
    for column in ("#", "score", "matched", "rankers", "id", "text", "image", "attributes"):
        table.add_column(column)
    for rank, hit in enumerate(result.hits, 1):
        badge = " (generated)" if hit.generated else ""
        # Text(...): item data is shown as is, never read as rich markup
        table.add_row(str(rank), f"{hit.score:.4f}", hit.modality, _rankers(hit),
                      Text(hit.external_id), Text((hit.text or "")[:60]),
                      Text((hit.image_ref or "") + badge),
                      Text("\n".join(attribute_lines(hit.attributes))))
    console.print(table)
    for line in [*facets, timings]:
        console.print(line, markup=False, highlight=False, emoji=False)


def _rankers(hit: Hit) -> str:
    return " ".join(f"{name}#{r.rank}" for name, r in hit.rankers.items())


def _hit_lines(rank: int, hit: Hit) -> list[str]:
    badge = " (generated)" if hit.generated else ""
    rankers = f"  rankers {_rankers(hit)}" if hit.rankers else ""
    lines = [f"{rank}. {hit.external_id}  score {hit.score:.4f}  matched {hit.modality}{rankers}"]
    lines += [f"   text: {hit.text}"] if hit.text else []
    lines += [f"   image: {hit.image_ref}{badge}"] if hit.image_ref else []
    return lines + [f"   {line}" for line in attribute_lines(hit.attributes)]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings(home=args.home) if args.home else Settings()
    try:
        query = query_from_args(args)
        workspace = Workspace.open(settings)
        result = Searcher(workspace).search(query)
    except json.JSONDecodeError as exc:
        print(f"xmodal-search: --filter is not valid JSON: {exc}", file=sys.stderr)
        return 2
    except XmodalError as exc:
        print(f"xmodal-search: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"hits": [asdict(h) for h in result.hits],
                          "total_considered": result.total_considered,
                          "mode": result.mode, "facet_scope": result.facet_scope,
                          "facets": [asdict(f) for f in result.facets],
                          "took_ms": result.timings_ms}, indent=2))
    else:
        render(result, Console(emoji=False))  # ":smile:" in a text stays as written
    return 0


if __name__ == "__main__":
    sys.exit(main())
