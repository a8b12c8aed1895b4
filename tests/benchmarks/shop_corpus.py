"""A synthetic shop catalogue and shopper queries for the keyword / hybrid benchmarks.

Titles read like a shop's ("Korvelo vintage black leather ankle boot"): brand, optional
style, colour and material, and a product noun of the item's category; each item also has
a `keywords` list of tags, a category, a price and a stock flag. Words are drawn with
Zipf-like weights (s ~ 1), as real catalogues are: a few words (`black`, `cotton`) occur in
a tenth of the items, most in far fewer. Queries are drawn from the same distributions in
the shapes shoppers type ("black boot", "korvelo running shoe", a misspelt word now and
then), so keyword queries hit common words, rare words and word pairs in a realistic mix.

Everything is a pure function of the item number (or the seed), so a build is reproducible.
"""

from __future__ import annotations

import itertools
import random
from bisect import bisect
from collections.abc import Sequence
from typing import Any

COLORS = ("black", "white", "blue", "grey", "red", "green", "navy", "beige", "brown",
          "pink", "yellow", "orange", "purple", "olive", "teal", "burgundy")
MATERIALS = ("cotton", "leather", "wool", "linen", "denim", "suede", "canvas", "silk",
             "polyester", "bamboo", "ceramic", "oak", "walnut", "steel", "glass", "rattan")
STYLES = ("classic", "vintage", "slim", "oversized", "minimalist", "retro", "casual",
          "premium", "lightweight", "handmade", "modern", "rustic", "sporty", "elegant",
          "compact", "cozy", "waterproof", "organic", "striped", "floral", "quilted",
          "padded", "knitted", "woven", "foldable", "adjustable", "insulated", "breathable")
# category -> product nouns (one or two words: "ankle boot" is a noun phrase shoppers type)
PRODUCTS = {
    "shoes": ("sneaker", "running shoe", "ankle boot", "loafer", "sandal", "slipper"),
    "jackets": ("jacket", "parka", "rain jacket", "bomber", "blazer", "gilet"),
    "dresses": ("dress", "maxi dress", "shirt dress", "sundress"),
    "tops": ("shirt", "t-shirt", "blouse", "sweater", "hoodie", "cardigan", "polo"),
    "trousers": ("jeans", "chinos", "trousers", "shorts", "leggings", "joggers"),
    "bags": ("backpack", "tote bag", "handbag", "wallet", "duffel bag", "crossbody bag"),
    "accessories": ("scarf", "hat", "beanie", "belt", "gloves", "sunglasses", "umbrella"),
    "watches": ("watch", "smartwatch", "chronograph", "watch strap"),
    "lamps": ("lamp", "floor lamp", "desk lamp", "pendant light", "lantern"),
    "chairs": ("chair", "armchair", "office chair", "stool", "rocking chair"),
    "tables": ("table", "coffee table", "side table", "desk", "dining table"),
    "kitchen": ("mug", "teapot", "kettle", "frying pan", "knife set", "cutting board"),
    "bedding": ("duvet cover", "pillow", "blanket", "throw", "bedspread"),
    "rugs": ("rug", "runner rug", "doormat", "bath mat"),
    "toys": ("teddy bear", "puzzle", "building blocks", "doll", "kite"),
    "sports": ("yoga mat", "dumbbell", "tennis racket", "football", "bicycle helmet"),
}
CATEGORIES = tuple(PRODUCTS)
TAGS = ("gift", "summer", "winter", "autumn", "spring", "outdoor", "office", "travel",
        "party", "wedding", "kids", "men", "women", "unisex", "eco", "recycled", "vegan",
        "bestseller", "new", "sale", "limited", "running", "hiking", "camping", "beach",
        "festival", "christmas", "birthday", "home", "garden", "workwear", "everyday",
        "lounge", "sleep", "gym", "yoga", "cycling", "skiing", "rain", "sun", "school",
        "student", "baby", "pet", "durable", "washable", "stretch", "warm", "cool", "soft",
        "lightweight", "luxury", "budget", "designer", "nordic", "boho", "industrial",
        "scandinavian", "japanese", "italian", "british", "french", "artisan", "fairtrade")
_SYLLABLES = ("ka", "lo", "mi", "ver", "to", "na", "ri", "bel", "sa", "dor", "en", "ul",
              "qui", "zan", "pe", "mor", "ti", "vak", "os", "lin")
# 100 made-up brand names ("Vermori"), spread over the syllable grid
BRANDS = tuple(a.capitalize() + b + c for a, b, c in itertools.islice(
    itertools.product(_SYLLABLES, repeat=3), 7, None, 79))[:100]
BRAND_COUNT = 100  # brand i % 100: one brand is exactly 1 % of the items


def _cumulative(count: int, s: float = 1.0) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank + 1) ** s for rank in range(count)))


_WEIGHTS = {name: _cumulative(len(words)) for name, words in
            (("color", COLORS), ("material", MATERIALS), ("style", STYLES), ("tag", TAGS))}


def _pick(rng: random.Random, name: str, words: Sequence[str]) -> str:
    weights = _WEIGHTS[name]
    return words[bisect(weights, rng.random() * weights[-1])]


def brand_of(i: int) -> str:
    return BRANDS[i % BRAND_COUNT]


def title_of(i: int) -> str:
    """A product title; the category is item i's (i % 16), the rest a draw seeded by i."""
    rng = random.Random(i * 2_654_435_761)
    category = CATEGORIES[i % len(CATEGORIES)]
    words = [brand_of(i)]
    if rng.random() < 0.6:
        words.append(_pick(rng, "style", STYLES))
    words.append(_pick(rng, "color", COLORS))
    if rng.random() < 0.7:
        words.append(_pick(rng, "material", MATERIALS))
    words.append(rng.choice(PRODUCTS[category]))
    return " ".join(words)


def attributes_of(i: int) -> dict[str, Any]:
    """Attributes for filters (brand 1 %, in_stock 30 %, price 10 % per 50) and keywords."""
    rng = random.Random(i * 40_503 + 17)
    tags = list(dict.fromkeys(_pick(rng, "tag", TAGS) for _ in range(rng.randint(2, 5))))
    return {"category": CATEGORIES[i % len(CATEGORIES)], "brand": brand_of(i),
            "in_stock": i % 10 < 3, "price": float(i % 500), "keywords": tags,
            "sku": f"SKU-{i:08d}"}


def _query(rng: random.Random) -> str:
    category = rng.choice(CATEGORIES)
    noun = rng.choice(PRODUCTS[category])
    shape = rng.random()
    if shape < 0.25:
        words = [_pick(rng, "color", COLORS), noun]
    elif shape < 0.4:
        words = [rng.choice(BRANDS), noun]
    elif shape < 0.55:
        words = [_pick(rng, "style", STYLES), _pick(rng, "material", MATERIALS), noun]
    elif shape < 0.7:
        words = [_pick(rng, "tag", TAGS), noun]
    elif shape < 0.8:
        words = [noun]
    elif shape < 0.9:
        words = [_pick(rng, "color", COLORS), _pick(rng, "material", MATERIALS), noun,
                 "for", _pick(rng, "tag", TAGS)]
    else:
        words = [_pick(rng, "color", COLORS), _pick(rng, "tag", TAGS), category]
    text = " ".join(words)
    if rng.random() < 0.05:  # a misspelling: two neighbouring letters swapped
        at = rng.randrange(len(text) - 1)
        text = text[:at] + text[at + 1] + text[at] + text[at + 2:]
    return text


def shopper_queries(count: int, seed: int, exclude: set[str] | None = None) -> list[str]:
    """`count` distinct shopper queries (none in `exclude`), reproducible from `seed`."""
    rng, seen, out = random.Random(seed), set(exclude or ()), []
    attempts = 0
    while len(out) < count:
        attempts += 1
        text = _query(rng)
        if attempts > 50 * count:  # the shapes above have ~10^5 distinct texts; never here
            text = f"{text} {attempts}"
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out
