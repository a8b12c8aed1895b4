"""Caption phrasings for emoji, and which augmentations a caption allows.

Variety matters more than volume: users type CLDR names ("running shoe"), Unicode names
("athletic shoe"), synonyms ("sneaker") and categories ("clothing"); each emoji gets a
few short phrasings (the house text tower reads 16 tokens) with its CLDR name first.
"""

from __future__ import annotations

import re

from indexer.house.emoji import Emoji


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# A caption naming a colour (or a thing defined by its colours, like a flag) must not
# see hue rotation or greyscale: a "red heart" turned blue would teach the wrong thing.
COLOUR_WORDS = _word_set(
    "red orange yellow green blue purple violet brown black white pink grey gray gold "
    "golden silver bronze beige turquoise cyan magenta colour color colored coloured "
    "light dark medium skin tone blond blonde ginger flag flags rainbow"
)
# Mirroring changes the meaning of directions and makes text unreadable.
ORIENTATION_WORDS = _word_set(
    "left right leftwards rightwards facing arrow arrows clockwise counterclockwise "
    "anticlockwise east west up-right up-left reverse previous next letter letters "
    "keycap button sign text word symbol symbols flag flags digit number clock "
    "writing ideograph"
)
_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)?")
MAX_KEYWORDS = 3


def _tokens(texts: list[str]) -> set[str]:
    return {token for text in texts for token in _TOKEN.findall(text.lower())}


def colour_safe(texts: list[str]) -> bool:
    """True when recolouring an image cannot contradict any of these texts."""
    return not (_tokens(texts) & COLOUR_WORDS)


def flip_safe(texts: list[str]) -> bool:
    """True when a mirrored image still matches every one of these texts."""
    return not (_tokens(texts) & ORIENTATION_WORDS)


def emoji_captions(emoji: Emoji) -> list[str]:
    """Distinct phrasings, CLDR name first (the one queries and evaluation use)."""
    name = emoji.name
    keywords = [k for k in emoji.keywords if k not in name.split()][:MAX_KEYWORDS]
    phrasings = [
        name,
        emoji.unicode_name,
        *emoji.short_names,
        f"{name} emoji",
        f"{name}, {emoji.subcategory}" if emoji.subcategory else "",
        f"{name}, {', '.join(keywords[:2])}" if keywords else "",
        ", ".join(keywords) if len(keywords) >= 2 else "",
    ]
    return list(dict.fromkeys(p for p in phrasings if p))


def policy_texts(emoji: Emoji) -> list[str]:
    """What augmentation policy reads: captions plus category (flags, symbols)."""
    return [*emoji_captions(emoji), emoji.category, emoji.subcategory, *emoji.keywords]
