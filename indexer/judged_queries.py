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
- `colour`: visual intent, "<colour> <noun>" ("red fruit", "blue heart"): the noun names a
  subcategory (SUBCATEGORY_NOUNS, a committed shopper's word for it), the colour is the
  item's dominant colour computed from its pixels (indexer/image_colours.py); relevant:
  the items (each style on its own: the two drawings may differ) of that subcategory
  whose picture is mostly that colour. The item's words say nothing of its colour unless
  its name happens to (the red apple); the pixels decide.
- `synonym`: a shopper's word the catalog never uses ("pooch", "aubergine", "rucksack")
  from SYNONYMS, a committed list written before any measurement, mapping it to a word of
  emoji names; kept only if neither the word nor its plural/singular occurs in any title,
  keyword, category or subcategory (checked when built). Relevant: every concept whose
  name holds the mapped word (e.g. "dog" -> dog, dog face, guide dog, service dog, hot
  dog: the data's own noise, kept as it is).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from indexer.image_colours import dominant_colour

PHRASES = ("looking for a {} for my phone", "{} sticker", "cute {} icon for a card",
           "i need a {} emoji", "{} picture for kids")
KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
_WORD = re.compile(r"^[a-z][a-z ]+$")
# A shopper's noun for a subcategory (fixed before any measurement; not every subcategory
# has one a shopper would say with a colour).
SUBCATEGORY_NOUNS = {
    "food fruit": "fruit", "food vegetable": "vegetable", "food sweet": "dessert",
    "food prepared": "food", "drink": "drink", "dishware": "dish",
    "plant flower": "flower", "plant other": "plant", "animal bird": "bird",
    "animal mammal": "animal", "animal bug": "insect", "animal marine": "sea animal",
    "animal reptile": "reptile", "heart": "heart", "clothing": "clothes",
    "country flag": "flag", "geometric": "shape", "sport": "ball", "book paper": "book",
    "musical instrument": "instrument", "place building": "building",
    "transport ground": "vehicle", "transport air": "aircraft", "transport water": "boat",
    "household": "household item", "tool": "tool", "sky & weather": "weather",
    "face smiling": "smiley", "cat face": "cat", "office": "office supply",
    "zodiac": "zodiac sign", "arrow": "arrow", "person role": "person",
    "hand fingers open": "hand", "light & video": "light", "mail": "mail",
    "computer": "computer", "money": "money", "music": "music"}


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


# A shopper's word -> a word of emoji names. Written once, before measuring; the builder
# drops entries whose word the catalog already uses (most everyday synonyms it does).
SYNONYMS = {
    "canine": "dog", "pooch": "dog", "doggy": "dog", "hound": "dog", "moggy": "cat",
    "stallion": "horse", "steed": "horse", "mare": "horse", "swine": "pig", "hog": "pig",
    "bovine": "cow", "cattle": "cow", "poultry": "chicken", "avian": "bird",
    "serpent": "snake", "arachnid": "spider", "simian": "monkey", "vermin": "rat",
    "sedan": "car", "hatchback": "car", "motorcar": "car", "motorbike": "motorcycle",
    "aeroplane": "airplane", "airliner": "airplane", "chopper": "helicopter",
    "vessel": "ship", "cellphone": "phone", "handset": "phone", "telly": "television",
    "spectacles": "glasses", "eyeglasses": "glasses", "sunnies": "sunglasses",
    "shades": "sunglasses", "brolly": "umbrella", "parasol": "umbrella", "frock": "dress",
    "gown": "dress", "trainers": "shoe", "stilettos": "high-heeled", "rucksack": "backpack",
    "knapsack": "backpack", "aubergine": "eggplant", "capsicum": "bell pepper",
    "chilli": "hot pepper", "maize": "corn", "prawn": "shrimp", "biscuit": "cookie",
    "java": "coffee", "espresso": "coffee", "vino": "wine", "ale": "beer", "lager": "beer",
    "spuds": "potato", "tater": "potato", "clementine": "tangerine", "mandarin": "tangerine",
    "cantaloupe": "melon", "crimson": "red", "scarlet": "red", "azure": "blue",
    "navy": "blue", "emerald": "green", "amber": "orange", "lavender": "purple",
    "sovereign": "crown", "tiara": "crown", "dagger": "knife", "blade": "knife",
    "timber": "wood", "lumber": "wood", "cash": "money", "dosh": "money",
    "lightbulb": "bulb", "torch": "flashlight", "mobile": "phone", "podium": "medal",
    "pastry": "croissant", "lolly": "lollipop", "sweets": "candy",
    "chuffed": "smiling", "grumpy": "pouting", "weeping": "crying", "sobbing": "crying",
    "giggle": "laughing", "snoozing": "sleeping",
    "twister": "tornado", "downpour": "rain", "drizzle": "rain",
    "blizzard": "snow", "flurry": "snow", "inferno": "fire", "blaze": "fire"}


class _Catalog:
    def __init__(self, rows: list[dict[str, Any]], image_root: Path | None = None) -> None:
        self.by_colour: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.vocabulary: set[str] = set()
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
            for words in (row["title"], row.get("category") or "", row["subcategory"],
                          *(row.get("keywords") or [])):
                self.vocabulary.update(re.findall(r"[\w-]+", words.lower()))
            if image_root is not None and row.get("image"):
                colour = dominant_colour(image_root / row["image"])
                if colour is not None:
                    self.by_colour[(row["subcategory"], colour)].add(row["id"])

    def relevant(self, concepts: set[str]) -> list[str]:
        return sorted(i for c in concepts for i in self.items_of[c])


def _titles(cat: _Catalog, rng: random.Random, n: int) -> list[tuple[str, set[str]]]:
    concepts = sorted(c for c, t in cat.title.items() if _WORD.match(t))
    return [(cat.title[c], {c}) for c in rng.sample(concepts, min(n, len(concepts)))]


def _keywords(cat: _Catalog, rng: random.Random, n: int) -> list[tuple[str, set[str]]]:
    usable = sorted(k for k, cs in cat.by_keyword.items()
                    if 2 <= len(cs) <= 10 and _WORD.match(k) and len(k) >= 4)
    return [(k, set(cat.by_keyword[k])) for k in rng.sample(usable, min(n, len(usable)))]


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


def _synonyms(cat: _Catalog, rng: random.Random, n: int) -> list[tuple[str, set[str]]]:
    def unused(word: str) -> bool:
        return not {word, word + "s", word.removesuffix("s")} & cat.vocabulary

    out = []
    for word, target in sorted(SYNONYMS.items()):
        named = {c for c, title in cat.title.items()
                 if re.search(rf"(^|\s){re.escape(target)}(\s|$)", title)}
        if unused(word) and named:
            out.append((word, named))
    return rng.sample(out, min(n, len(out)))


def _colours(cat: _Catalog, rng: random.Random, n: int) -> list[tuple[str, list[str]]]:
    usable = sorted((sub, colour) for (sub, colour), ids in cat.by_colour.items()
                    if sub in SUBCATEGORY_NOUNS and len(ids) >= 2)
    return [(f"{colour} {SUBCATEGORY_NOUNS[sub]}", sorted(cat.by_colour[(sub, colour)]))
            for sub, colour in rng.sample(usable, min(n, len(usable)))]


def build(rows: list[dict[str, Any]], per_type: int, seed: int = 0,
          image_root: Path | None = None) -> list[dict[str, Any]]:
    """The judged queries; `colour` ones only with `image_root` (where row["image"] is)."""
    cat = _Catalog(rows, image_root)
    makers = {"title": _titles, "keyword": _keywords, "subcategory": _subcategories,
              "phrase": _phrases, "misspelling": _misspellings, "synonym": _synonyms}
    queries = []
    for kind, make in makers.items():
        rng = random.Random(f"{seed}-{kind}")
        for text, concepts in make(cat, rng, per_type):
            queries.append({"query": text, "type": kind, "relevant": cat.relevant(concepts)})
    for text, item_ids in _colours(cat, random.Random(f"{seed}-colour"), per_type):
        queries.append({"query": text, "type": "colour", "relevant": item_ids})
    return queries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", type=Path, default=Path("data/sample/catalog.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("data/eval/queries.jsonl"))
    parser.add_argument("--per-type", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in args.catalog.read_text().splitlines() if line]
    queries = build(rows, args.per_type, args.seed, image_root=args.catalog.parent)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(q) + "\n" for q in queries))
    print(f"{len(queries)} queries -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
