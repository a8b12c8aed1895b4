"""Emoji art and names from the npm packs, read straight from the tarballs.

emoji-datasource-{google,twitter} carry 64 px PNGs and `emoji.json` (Unicode name, short
names, category, subcategory, version added); emojilib carries CLDR-style names and
keywords. Tarballs are fetched with `npm pack` when absent and never extracted to disk
(members are read in memory, so no path in an archive can escape).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path

# Pinned so a rebuild gives byte-identical output.
PACKS: dict[str, str] = {
    "emoji-datasource-google": "16.0.0",
    "emoji-datasource-twitter": "16.0.0",
    "emojilib": "4.0.3",
}
STYLE_PACKS: dict[str, str] = {
    "google": "emoji-datasource-google",
    "twitter": "emoji-datasource-twitter",
}
KEYWORD_PACK = "emojilib"
IMAGE_SIZE = 64

# Emoji version -> year of release (unicode.org/emoji/charts/emoji-versions.html).
EMOJI_YEARS: dict[str, int] = {
    "0.6": 2010, "0.7": 2014, "1.0": 2015, "2.0": 2015, "3.0": 2016, "4.0": 2016,
    "5.0": 2017, "11.0": 2018, "12.0": 2019, "12.1": 2019, "13.0": 2020, "13.1": 2020,
    "14.0": 2021, "15.0": 2022, "15.1": 2023, "16.0": 2024,
}


class PackUnavailableError(RuntimeError):
    """An npm pack is neither on disk nor fetchable (no npm, or no registry)."""


@dataclass(frozen=True)
class Emoji:
    """One base emoji (skin-tone variants are listed, not separate entries)."""

    code: str  # unified code points, lower case: "1f45f"
    char: str
    name: str  # CLDR-style, from emojilib: "running shoe"
    unicode_name: str  # emoji.json, lower-cased: "athletic shoe"
    short_names: tuple[str, ...]
    keywords: tuple[str, ...]  # emojilib keywords after the name
    category: str
    subcategory: str
    emoji_version: str
    year: int | None
    image: str  # file name inside img/<style>/64/
    variants: tuple[str, ...] = ()  # skin-tone variant files
    styles: tuple[str, ...] = field(default=())  # styles that have art for it


def pack_path(name: str, packs_dir: Path) -> Path:
    return packs_dir / f"{name}-{PACKS[name]}.tgz"


def ensure_pack(name: str, packs_dir: Path) -> Path:
    """The tarball for `name`, fetched with `npm pack` into packs_dir when absent."""
    path = pack_path(name, packs_dir)
    if path.is_file():
        return path
    npm = shutil.which("npm")
    if npm is None:
        raise PackUnavailableError(f"{path} is missing and npm is not installed to fetch it")
    packs_dir.mkdir(parents=True, exist_ok=True)
    spec = f"{name}@{PACKS[name]}"
    result = subprocess.run(
        [npm, "pack", spec, "--pack-destination", str(packs_dir)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0 or not path.is_file():
        raise PackUnavailableError(f"npm pack {spec} failed: {result.stderr.strip()[-500:]}")
    return path


def read_member(tarball: Path, member: str) -> bytes:
    with tarfile.open(tarball, "r:gz") as archive:
        handle = archive.extractfile(member)
        if handle is None:
            raise KeyError(f"{member} is not a file in {tarball}")
        return handle.read()


def read_style_images(tarball: Path, style: str) -> dict[str, bytes]:
    """{file name: PNG bytes} of the 64 px art in one style's pack."""
    prefix = f"package/img/{style}/{IMAGE_SIZE}/"
    images: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            if member.isfile() and member.name.startswith(prefix):
                handle = archive.extractfile(member)
                if handle is not None:
                    images[member.name[len(prefix):]] = handle.read()
    return images


def _char(unified: str) -> str:
    return "".join(chr(int(part, 16)) for part in unified.split("-"))


def _lookup_keywords(entry: dict, keywords: dict[str, list[str]]) -> list[str]:
    """emojilib keys are the fully-qualified sequence; older ones may lack FE0F."""
    candidates = [_char(entry["unified"])]
    if entry.get("non_qualified"):
        candidates.append(_char(entry["non_qualified"]))
    candidates.append(candidates[0].replace("\ufe0f", ""))
    for candidate in candidates:
        if candidate in keywords:
            return keywords[candidate]
    return []


def _words(token: str, hyphens: bool = True) -> str:
    """emojilib joins words with "_" but keeps real hyphens ("x-ray"); emoji.json short
    names and subcategories join with "-" ("food-fruit")."""
    token = token.replace("_", " ")
    return " ".join((token if hyphens else token.replace("-", " ")).split()).lower()


def parse_emoji(emoji_json: bytes, keywords_json: bytes) -> list[Emoji]:
    """Join emoji.json with emojilib; sorted by Unicode's own sort order."""
    entries = json.loads(emoji_json)
    keywords = json.loads(keywords_json)
    parsed = [_to_emoji(entry, keywords) for entry in entries]
    parsed.sort(key=lambda e: (e[1], e[0].code))
    emoji = [item for item, _ in parsed]
    return _disambiguate_names(emoji)


def _cldr_name(name: str, unicode_name: str) -> str:
    """emojilib's identifiers lost CLDR's hyphens and apostrophes ("t_shirt",
    "woman_s_sandal"): take them back from the Unicode name, or restore the "'s"."""
    if name != unicode_name and name == unicode_name.replace("-", " "):
        return unicode_name
    return re.sub(r"(?<=\w\w) s\b", "'s", name)  # but not "flag u s ..." (U.S.)


def _to_emoji(entry: dict, keywords: dict[str, list[str]]) -> tuple[Emoji, int]:
    unicode_name = _words(entry.get("name") or entry["short_name"])
    found = [_words(k) for k in _lookup_keywords(entry, keywords)]
    name = _cldr_name(found[0] if found and found[0] else unicode_name, unicode_name)
    variants = sorted(v["image"] for v in (entry.get("skin_variations") or {}).values())
    version = str(entry.get("added_in") or "")
    emoji = Emoji(
        code=entry["unified"].lower(), char=_char(entry["unified"]), name=name,
        unicode_name=unicode_name,
        short_names=tuple(_words(s, hyphens=False) for s in entry["short_names"]),
        keywords=tuple(k for k in dict.fromkeys(found[1:]) if k and k != name),
        category=entry.get("category") or "",
        subcategory=_words(entry.get("subcategory") or "", hyphens=False),
        emoji_version=version, year=EMOJI_YEARS.get(version), image=entry["image"],
        variants=tuple(variants),
        styles=tuple(s for s in STYLE_PACKS if entry.get(f"has_img_{s}")),
    )
    return emoji, int(entry.get("sort_order") or 0)


def _disambiguate_names(emoji: list[Emoji]) -> list[Emoji]:
    """A name shared by several emoji (emojilib's 'keycap_' for every keycap) is no
    name: fall back to the Unicode name so every caption query has one right answer."""
    counts: dict[str, int] = {}
    for item in emoji:
        counts[item.name] = counts.get(item.name, 0) + 1
    return [
        item if counts[item.name] == 1 else replace(item, name=item.unicode_name)
        for item in emoji
    ]


def load_emoji(packs_dir: Path) -> list[Emoji]:
    """All base emoji with names and keywords (fetching the packs when needed)."""
    datasource = ensure_pack(STYLE_PACKS["google"], packs_dir)
    emojilib = ensure_pack(KEYWORD_PACK, packs_dir)
    return parse_emoji(
        read_member(datasource, "package/emoji.json"),
        read_member(emojilib, "package/dist/emoji-en-US.json"),
    )
