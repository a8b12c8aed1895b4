"""Tiny fake npm tarballs shaped like emoji-datasource-* and emojilib (no network)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from PIL import Image

from indexer.house.emoji import PACKS, STYLE_PACKS

# (unified, Unicode name, short names, category, subcategory, version, emojilib keywords)
FAKE_EMOJI = [
    ("1F45F", "ATHLETIC SHOE", ["athletic_shoe"], "Objects", "clothing", "0.6",
     ["running_shoe", "shoes", "sneaker"]),
    ("1F34E", "RED APPLE", ["apple"], "Food & Drink", "food-fruit", "0.6",
     ["red_apple", "fruit"]),
    ("1F455", "T-SHIRT", ["shirt", "tshirt"], "Objects", "clothing", "0.6",
     ["t_shirt", "tee", "polo"]),
    ("1F1EA-1F1EC", "Egypt Flag", ["flag-eg"], "Flags", "country-flag", "2.0",
     ["flag_egypt", "nation"]),
    ("2B05-FE0F", "LEFTWARDS BLACK ARROW", ["arrow_left"], "Symbols", "arrow", "0.6",
     ["left_arrow", "direction"]),
    ("1F9C7", "WAFFLE", ["waffle"], "Food & Drink", "food-prepared", "12.0", []),
]
COLOURS = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (200, 200, 30), (200, 30, 200),
           (30, 200, 200)]


def _png(colour: tuple[int, int, int], size: int = 64) -> bytes:
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    image.paste((*colour, 255), (8, 8, size - 8, size - 8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _entries() -> list[dict]:
    entries = []
    for order, (unified, name, shorts, category, sub, version, _) in enumerate(FAKE_EMOJI):
        entry = {"name": name, "unified": unified, "image": f"{unified.lower()}.png",
                 "short_name": shorts[0], "short_names": shorts, "category": category,
                 "subcategory": sub, "added_in": version, "sort_order": order,
                 "has_img_google": True, "has_img_twitter": True}
        if unified == "1F45F":  # one emoji with a skin-tone variant
            entry["skin_variations"] = {"1F3FB": {"image": "1f45f-1f3fb.png"}}
        entries.append(entry)
    return entries


def write_fake_packs(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    entries = json.dumps(_entries()).encode()
    for index, (style, pack) in enumerate(STYLE_PACKS.items()):
        with tarfile.open(directory / f"{pack}-{PACKS[pack]}.tgz", "w:gz") as archive:
            _add(archive, "package/emoji.json", entries)
            _add(archive, "package/LICENSE", b"The MIT License (MIT)\nCal Henderson\n")
            for row, entry in enumerate(_entries()):
                colour = COLOURS[(row + index) % len(COLOURS)]
                files = [entry["image"]] + [v["image"] for v in
                                            entry.get("skin_variations", {}).values()]
                for file in files:
                    _add(archive, f"package/img/{style}/64/{file}", _png(colour))
    keywords = {"".join(chr(int(h, 16)) for h in unified.split("-")): words
                for unified, *_, words in FAKE_EMOJI if words}
    with tarfile.open(directory / f"emojilib-{PACKS['emojilib']}.tgz", "w:gz") as archive:
        _add(archive, "package/dist/emoji-en-US.json", json.dumps(keywords).encode())
        _add(archive, "package/LICENSE", b"The MIT License (MIT)\nMu-An Chiou\n")
    return directory
