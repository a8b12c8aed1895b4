"""Dominant colour names of an image, computed from its pixels (for the judged query set:
visual-intent queries such as "red fruit" whose relevance the item's words do not give).

Each opaque pixel (alpha >= 128) is named by fixed HSV ranges; an image's dominant colour
is the most common name when it covers at least `MIN_SHARE` of the opaque pixels, else
none (a multicoloured image has no single colour a shopper would name).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

MIN_SHARE = 0.5
SIDE = 64  # pixels per side the image is reduced to before counting
# Hue ranges in degrees, [low, high); red wraps around 0.
HUES = (("red", 0, 15), ("orange", 15, 38), ("yellow", 38, 70), ("green", 70, 165),
        ("blue", 165, 255), ("purple", 255, 290), ("pink", 290, 345), ("red", 345, 361))
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black",
           "white", "grey")


def pixel_names(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Colour name per pixel; inputs on [0, 1], shape [n]."""
    degrees = hue * 360
    names = np.full(hue.shape, "pink", dtype=object)
    for name, low, high in HUES:
        names[(degrees >= low) & (degrees < high)] = name
    # Dark, saturated reds and oranges read as brown.
    names[np.isin(names, ("red", "orange")) & (value < 0.6) & (saturation > 0.25)] = "brown"
    grey = saturation < 0.2
    names[grey & (value > 0.85)] = "white"
    names[grey & (value <= 0.85)] = "grey"
    names[value < 0.2] = "black"
    return names


def dominant_colour(path: Path) -> str | None:
    """The colour covering at least MIN_SHARE of the opaque pixels, or None."""
    with Image.open(path) as image:
        rgba = image.convert("RGBA").resize((SIDE, SIDE))
    opaque = np.asarray(rgba)[..., 3] >= 128  # [SIDE, SIDE]
    hsv = np.asarray(rgba.convert("RGB").convert("HSV"), dtype=np.float64) / 255
    if not opaque.any():
        return None
    names = pixel_names(hsv[..., 0][opaque], hsv[..., 1][opaque], hsv[..., 2][opaque])
    name, count = Counter(names.tolist()).most_common(1)[0]
    return str(name) if count / len(names) >= MIN_SHARE else None
