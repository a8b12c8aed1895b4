"""Build the judged query set of the sample catalog (committed as data/eval/queries.jsonl).

    python -m indexer.judged_queries [--catalog data/sample/catalog.jsonl]
                                     [--out data/eval/queries.jsonl] [--per-type 60]

Relevance comes from the data, never from a model: an emoji concept (the code point after
the style prefix of the id, e.g. `google-1f600` and `twitter-1f600`) is one product drawn
in two styles; a query's relevant items are every item of every concept it names.

Types (seeded, so the file is reproducible):
- `title`: an emoji's CLDR name ("grinning face"); relevant: that concept.
- `keyword`: a keyword carried by 2-10 concepts ("sneakers"); relevant: all of them.
- `subcategory`: a subcategory with at most 30 concepts ("animal bird"); relevant: its items.
- `phrase`: shopper phrasings: a name in a sentence ("looking for a red apple for my
  phone"), or two keywords of one concept ("running sneakers"), relevant: every concept
  carrying both.
- `misspelling`: a name or keyword with one typing error (deletion, transposition,
  doubled or neighbouring-key letter) in its longest word; relevant: as unmisspelled.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

PHRASES = ("looking for a {} for my phone", "{} sticker", "cute {} icon for a card",
           "i need a {} emoji", "{} picture for kids")
KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
_WORD = re.compile(r"^[a-z][a-z ]+$")


def _concept(item_id: str) -> str:
    return item_id.split("-", 1)[-1]


def _neighbour(letter: str, rng: random.Random) -> str:
    for row in KEYBOARD:
        if letter in row:
            i = row.index(letter)
            return row[max(0, i - 1)] if rng.random() < 0.5 and i > 0 else \
                row[min(len(row) - 1, i + 1)]
    return letter


def misspell(text: str, rng: random.Random) -> str:
    """One typing error in the longest word; retried until the word really changes (a
    transposition of equal letters, or an edge key's neighbour, can leave it as it was)."""
    for _ in range(100):
        typo = _one_typo(text, rng)
        if typo != text:
            return typo
    return typo


def _one_typo(text: str, rng: random.Random) -> str:
    words = text.split()
    target = max(range(len(words)), key=lambda i: len(words[i]))
    word = words[target]
    i = rng.randrange(1, len(word) - 1)  # keep the first letter, as typists mostly do
    edit = rng.choice(["delete", "transpose", "double", "neighbour"])
    if edit == "delete":
        word = word[:i] + word[i + 1:]
    elif edit == "transpose":
        word = word[:i] + word[i + 1] + word[i] + word[i + 2:]
    elif edit == "double":
        word = word[:i] + word[i] + word[i:]
    else:
        word = word[:i] + _neighbour(word[i], rng) + word[i + 1:]
    words[target] = word
    return " ".join(words)


class _Catalog:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.items_of: dict[str, list[str]] = defaultdict(list)
        self.title: dict[str, str] = {}
        self.keywords: dict[str, set[str]] = defaultdict(set)
        self.by_keyword: dict[str, set[str]] = defaultdict(set)
        self.by_subcategory: dict[str, set[str]] = defaultdict(set)
        for row in rows:
            concept = _concept(row["id"])
            self.items_of[concept].append(row["id"])
            self.title[concept] = row["title"].lower()
            for keyword in row.get("keywords") or []:
                self.keywords[concept].add(keyword.lower())
                self.by_keyword[keyword.lower()].add(concept)
            self.by_subcategory[row["subcategory"]].add(concept)

    def relevant(self, concepts: set[str]) -> list[str]:
        return sorted(i for c in concepts for i in self.items_of[c])


def _titles(cat: _Catalog, rng: random.Random, n: int) -> list[tuple[str, set[str]]]:
    concepts = sorted(c for c, t in cat.title.items() if _WORD.match(t))
    return [(cat.title[c], {c}) for c in rng.sample(concepts, n)]


def _keywords(cat: _Catalog, rng: random.Random, n: int) -> list[tuple[str, set[str]]]:
    usable = sorted(k for k, cs in cat.by_keyword.items()
                    if 2 <= len(cs) <= 10 and _WORD.match(k) and len(k) >= 4)
    return [(k, set(cat.by_keyword[k])) for k in rng.sample(usable, n)]


def _subcategories(cat: _Catalog, rng: random.Random, n: int) -> list[tuple[str, set[str]]]:
    usable = sorted(s for s, cs in cat.by_subcategory.items() if len(cs) <= 30)
    return [(s, set(cat.by_subcategory[s])) for s in rng.sample(usable, min(n, len(usable)))]


def _phrases(cat: _Catalog, rng: random.Random, n: int) -> list[tuple[str, set[str]]]:
    out = [(rng.choice(PHRASES).format(t), c) for t, c in _titles(cat, rng, n // 2)]
    concepts = sorted(c for c, ks in cat.keywords.items() if len(ks) >= 2)
    while len(out) < n:
        concept = rng.choice(concepts)
        words = [k for k in sorted(cat.keywords[concept]) if _WORD.match(k) and len(k) >= 3]
        if len(words) < 2:
            continue
        first, second = rng.sample(words, 2)
        both = cat.by_keyword[first] & cat.by_keyword[second]
        if len(both) <= 10:
            out.append((f"{first} {second}", both))
    return out


def _misspellings(cat: _Catalog, rng: random.Random, n: int) -> list[tuple[str, set[str]]]:
    sources = _titles(cat, rng, n // 2) + _keywords(cat, rng, n - n // 2)
    return [(misspell(text, rng), concepts) for text, concepts in sources
            if max(len(w) for w in text.split()) >= 5]


def build(rows: list[dict[str, Any]], per_type: int, seed: int = 0) -> list[dict[str, Any]]:
    cat = _Catalog(rows)
    makers = {"title": _titles, "keyword": _keywords, "subcategory": _subcategories,
              "phrase": _phrases, "misspelling": _misspellings}
    queries = []
    for kind, make in makers.items():
        rng = random.Random(f"{seed}-{kind}")
        for text, concepts in make(cat, rng, per_type):
            queries.append({"query": text, "type": kind, "relevant": cat.relevant(concepts)})
    return queries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", type=Path, default=Path("data/sample/catalog.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("data/eval/queries.jsonl"))
    parser.add_argument("--per-type", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in args.catalog.read_text().splitlines() if line]
    queries = build(rows, args.per_type, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(q) + "\n" for q in queries))
    print(f"{len(queries)} queries -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
