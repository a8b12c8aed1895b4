"""Build the emoji training set (cache) and the shipped sample catalog (repo).

    python -m indexer.house.data build --out data/sample [--cache ~/.cache/xmodal/emoji]
                                      [--packs DIR]

The npm tarballs (`--packs`, default `<cache>/npm`) are fetched with `npm pack` when
absent and never committed. Output is deterministic: same packs, same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from PIL import Image

from indexer.house.captions import colour_safe, emoji_captions, flip_safe, policy_texts
from indexer.house.emoji import (
    KEYWORD_PACK,
    PACKS,
    STYLE_PACKS,
    Emoji,
    ensure_pack,
    load_emoji,
    read_member,
    read_style_images,
)

DEFAULT_CACHE = Path("~/.cache/xmodal/emoji").expanduser()
TRAIN_MANIFEST = "emoji.jsonl"
CATALOG_FILE = "catalog.jsonl"
NO_IMAGE_PERCENT = 5  # items without an image exercise image generation
HOLDOUT_TENTHS = 1  # "unseen concepts" slice: 10 % of emoji, chosen by hash
LICENSES_DIR = Path(str(resources.files("search.models") / "licenses"))


def _bucket(salt: str, key: str, modulo: int) -> int:
    digest = hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()
    return int(digest[:12], 16) % modulo


def is_holdout(code: str) -> bool:
    """Whether an emoji belongs to the held-out slice of the unseen-concepts eval."""
    return _bucket("holdout", code, 10) < HOLDOUT_TENTHS


def has_sample_image(item_id: str) -> bool:
    return _bucket("sample-image", item_id, 100) >= NO_IMAGE_PERCENT


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _jsonl(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def build_training_set(emoji: list[Emoji], art: dict[str, dict[str, bytes]],
                       out: Path) -> Path:
    """Original 64 px PNGs (all skin tones) per style + one manifest row per emoji."""
    rows = []
    for item in emoji:
        images: dict[str, list[str]] = {}
        for style, files in art.items():
            names = [n for n in (item.image, *item.variants) if n in files]
            for name in names:
                _write(out / "images" / style / name, files[name])
            if names and item.image in files:
                images[style] = [f"images/{style}/{n}" for n in names]
        if not images:
            continue
        texts = policy_texts(item)
        rows.append({
            "code": item.code, "name": item.name, "captions": emoji_captions(item),
            "category": item.category, "subcategory": item.subcategory,
            "colour_safe": colour_safe(texts), "flip_safe": flip_safe(texts),
            "holdout": is_holdout(item.code), "images": images,
        })
    (out / TRAIN_MANIFEST).write_text(_jsonl(rows), encoding="utf-8")
    return out / TRAIN_MANIFEST


def compact_png(data: bytes) -> bytes:
    """64 px RGBA art as a 256-colour palette PNG: ~2 KB instead of ~3 KB, visually equal."""
    with Image.open(io.BytesIO(data)) as image:
        rgba = image.convert("RGBA")
    palette = rgba.quantize(colors=256, method=Image.Quantize.FASTOCTREE,
                            dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def catalog_row(item: Emoji, style: str, image: str | None) -> dict:
    return {
        "id": f"{style}-{item.code}", "title": item.name, "emoji": item.char,
        "keywords": list(item.keywords), "category": item.category,
        "subcategory": item.subcategory, "style": style, "year": item.year,
        "emoji_version": item.emoji_version, "image": image,
    }


def build_sample_catalog(emoji: list[Emoji], art: dict[str, dict[str, bytes]],
                         out: Path) -> Path:
    """catalog.jsonl + images/<style>/<code>.png; base emoji only, both styles."""
    shutil.rmtree(out / "images", ignore_errors=True)
    rows = []
    for style, files in art.items():
        for item in emoji:
            if item.image not in files:
                continue
            item_id = f"{style}-{item.code}"
            image = None
            if has_sample_image(item_id):
                image = f"images/{style}/{item.code}.png"
                _write(out / image, compact_png(files[item.image]))
            rows.append(catalog_row(item, style, image))
    (out / CATALOG_FILE).write_text(_jsonl(rows), encoding="utf-8")
    return out / CATALOG_FILE


NOTICE = """\
xmodal sample catalog: emoji art, names and keywords
=====================================================

Built by `python -m indexer.house.data build` from these npm packages:

- emoji-datasource-google {google} — Noto Emoji art, Copyright Google Inc.,
  licensed under the Apache License, Version 2.0 (licenses/Apache-2.0.txt).
  https://github.com/googlefonts/noto-emoji
- emoji-datasource-twitter {twitter} — Twemoji graphics, Copyright Twitter, Inc. / X Corp.
  and other contributors, licensed under CC-BY 4.0
  (https://creativecommons.org/licenses/by/4.0/, licenses/CC-BY-4.0.txt).
  https://github.com/jdecked/twemoji
- emoji-datasource metadata (emoji.json: names, categories, versions), Copyright (c) 2013
  Cal Henderson, MIT License (licenses/MIT-emoji-datasource.txt).
  https://github.com/iamcal/emoji-data
- emojilib {emojilib} — keywords and CLDR-style names, Copyright (c) 2014 Mu-An Chiou,
  MIT License (licenses/MIT-emojilib.txt). https://github.com/muan/emojilib

Changes: images were re-encoded as 256-colour palette PNGs (64 px); names and keywords
were lower-cased and joined into catalog.jsonl. ~5 % of items deliberately have no image.
"""


def write_notice(out: Path, packs_dir: Path) -> None:
    versions = {style: PACKS[pack] for style, pack in STYLE_PACKS.items()}
    (out / "NOTICE").write_text(NOTICE.format(**versions, emojilib=PACKS[KEYWORD_PACK]))
    licenses = out / "licenses"
    licenses.mkdir(parents=True, exist_ok=True)
    for name in ("Apache-2.0.txt", "CC-BY-4.0.txt"):
        shutil.copyfile(LICENSES_DIR / name, licenses / name)
    for pack, target in ((STYLE_PACKS["google"], "MIT-emoji-datasource.txt"),
                         (KEYWORD_PACK, "MIT-emojilib.txt")):
        (licenses / target).write_bytes(read_member(ensure_pack(pack, packs_dir),
                                                    "package/LICENSE"))


def build(out: Path, cache: Path, packs_dir: Path | None = None,
          styles: tuple[str, ...] = tuple(STYLE_PACKS)) -> dict:
    """The one documented command: training set into `cache`, sample catalog into `out`."""
    packs_dir = packs_dir or cache / "npm"
    emoji = load_emoji(packs_dir)
    art = {s: read_style_images(ensure_pack(STYLE_PACKS[s], packs_dir), s) for s in styles}
    manifest = build_training_set(emoji, art, cache / "train")
    catalog = build_sample_catalog(emoji, art, out)
    write_notice(out, packs_dir)
    sample_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"emoji": len(emoji), "train_manifest": str(manifest), "catalog": str(catalog),
            "sample_items": sum(1 for _ in catalog.open()), "sample_bytes": sample_bytes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m indexer.house.data",
                                     description="Build the emoji training set and sample.")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("build", help="build training set and sample catalog")
    command.add_argument("--out", type=Path, default=Path("data/sample"),
                         help="sample catalog directory (shipped in the repo)")
    command.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                         help="training set directory (outside the repo)")
    command.add_argument("--packs", type=Path, default=None,
                         help="npm tarball directory (default: <cache>/npm; fetched if absent)")
    command.add_argument("--styles", default=",".join(STYLE_PACKS),
                         help="comma-separated art styles")
    args = parser.parse_args(argv)
    styles = tuple(s for s in args.styles.split(",") if s)
    print(json.dumps(build(args.out, args.cache.expanduser(), args.packs, styles), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def _open_rgba(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGBA")


def emoji_examples(train_dir: Path, styles: tuple[str, ...] = tuple(STYLE_PACKS),
                   exclude_holdout: bool = False, only_holdout: bool = False) -> list:
    """Training examples, one per (emoji, style): all skin tones as views, all phrasings."""
    from indexer.house.pairs import Example

    rows = [json.loads(line) for line in (train_dir / TRAIN_MANIFEST).open(encoding="utf-8")]
    examples = []
    for style in styles:
        for row in rows:
            if style not in row["images"] or (exclude_holdout and row["holdout"]) \
                    or (only_holdout and not row["holdout"]):
                continue
            views = tuple(_open_rgba(train_dir / p) for p in row["images"][style])
            examples.append(Example(views, tuple(row["captions"]),
                                    flip_ok=row["flip_safe"], colour_ok=row["colour_safe"]))
    return examples
