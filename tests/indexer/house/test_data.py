import json
from pathlib import Path

import pytest
from PIL import Image

from indexer.house import data, emoji
from indexer.house.captions import colour_safe, emoji_captions, flip_safe
from indexer.house.data import build, emoji_examples
from tests.indexer.house.fake_packs import FAKE_EMOJI, write_fake_packs


@pytest.fixture
def packs(tmp_path: Path) -> Path:
    return write_fake_packs(tmp_path / "npm")


@pytest.fixture
def built(tmp_path: Path, packs: Path) -> tuple[Path, Path, dict]:
    out, cache = tmp_path / "sample", tmp_path / "cache"
    return out, cache, build(out, cache, packs)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_names_come_from_emojilib_and_unicode(packs):
    parsed = {e.code: e for e in emoji.load_emoji(packs)}
    shoe = parsed["1f45f"]
    assert shoe.name == "running shoe" and shoe.unicode_name == "athletic shoe"
    assert shoe.keywords == ("shoes", "sneaker") and shoe.variants == ("1f45f-1f3fb.png",)
    assert parsed["1f455"].name == "t-shirt"  # CLDR's hyphen, lost by emojilib's "t_shirt"
    assert parsed["1f34e"].subcategory == "food fruit" and parsed["1f34e"].year == 2010
    assert parsed["1f9c7"].name == "waffle"  # not in emojilib: Unicode name
    assert parsed["2b05-fe0f"].char == "\u2b05\ufe0f"


def test_cldr_names_get_hyphens_and_apostrophes_back():
    assert emoji._cldr_name("t shirt", "t-shirt") == "t-shirt"
    assert emoji._cldr_name("woman s sandal", "womans sandal") == "woman's sandal"
    assert emoji._cldr_name("flag u s virgin islands", "x") == "flag u s virgin islands"


def test_captions_and_augmentation_policy(packs):
    parsed = {e.code: e for e in emoji.load_emoji(packs)}
    captions = emoji_captions(parsed["1f45f"])
    assert captions[0] == "running shoe" and "athletic shoe" in captions
    assert len(captions) == len(set(captions)) >= 4
    assert not colour_safe(emoji_captions(parsed["1f34e"]))  # "red apple"
    assert not flip_safe(["left arrow"]) and flip_safe(["running shoe"])


def test_sample_catalog(built):
    out, _, summary = built
    rows = _rows(out / "catalog.jsonl")
    assert summary["sample_items"] == len(rows) == 2 * len(FAKE_EMOJI)
    row = next(r for r in rows if r["id"] == "google-1f45f")
    assert {k: row[k] for k in ("title", "category", "subcategory", "style", "year")} == {
        "title": "running shoe", "category": "Objects", "subcategory": "clothing",
        "style": "google", "year": 2010}
    assert row["keywords"] == ["shoes", "sneaker"]
    for r in rows:
        assert r["image"] is None or (out / r["image"]).is_file()
        assert (r["image"] is not None) == data.has_sample_image(r["id"])
    with Image.open(out / rows[0]["image"]) as image:
        assert image.size == (64, 64)


def test_notice_and_licences(built):
    out = built[0]
    notice = (out / "NOTICE").read_text()
    for needed in ("Apache License", "CC-BY 4.0", "creativecommons.org/licenses/by/4.0",
                   "Mu-An Chiou", "Twitter"):
        assert needed in notice
    names = {p.name for p in (out / "licenses").iterdir()}
    assert names == {"Apache-2.0.txt", "CC-BY-4.0.txt", "MIT-emojilib.txt",
                     "MIT-emoji-datasource.txt"}
    assert "Attribution 4.0 International" in (out / "licenses/CC-BY-4.0.txt").read_text()


def test_training_set_has_both_styles_and_variants(built):
    _, cache, _ = built
    rows = _rows(cache / "train" / data.TRAIN_MANIFEST)
    shoe = next(r for r in rows if r["code"] == "1f45f")
    assert shoe["images"]["twitter"] == ["images/twitter/1f45f.png",
                                         "images/twitter/1f45f-1f3fb.png"]
    examples = emoji_examples(cache / "train", ("google", "twitter"))
    assert len(examples) == 2 * len(FAKE_EMOJI)
    assert examples[0].images[0].mode == "RGBA"
    held = [r for r in rows if r["holdout"]]
    kept = emoji_examples(cache / "train", ("google",), exclude_holdout=True)
    assert len(kept) == len(FAKE_EMOJI) - len(held)


def test_build_is_deterministic(tmp_path, packs, built):
    out, cache, _ = built
    again = tmp_path / "again"
    build(again, tmp_path / "cache2", packs)
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    second = {p.relative_to(again): p.read_bytes() for p in again.rglob("*") if p.is_file()}
    assert first == second


def test_missing_pack_without_npm_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(emoji.shutil, "which", lambda _: None)
    with pytest.raises(emoji.PackUnavailableError, match="npm is not installed"):
        emoji.ensure_pack("emojilib", tmp_path)


def test_cli_build(tmp_path, packs, capsys):
    code = data.main(["build", "--out", str(tmp_path / "s"), "--cache", str(tmp_path / "c"),
                      "--packs", str(packs)])
    assert code == 0 and json.loads(capsys.readouterr().out)["emoji"] == len(FAKE_EMOJI)
