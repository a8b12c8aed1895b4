"""Media by reference: stored as a location, served only from inside the reference roots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from search.collection.preparing import MediaMode, NewItem
from search.engine import Searcher
from search.errors import MediaNotFoundError
from search.media import MediaStore, is_reference, is_remote_reference
from search.query import SearchQuery, Target
from tests.utils import images
from tests.utils.corpus import png_bytes


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A served root with a photo, a secret beside it, and links in and out of the root."""
    root, outside = tmp_path / "photos", tmp_path / "private"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    photo = root / "sub" / "a.jpg"
    photo.write_bytes(images.big_jpeg((64, 48)))
    secret = outside / "secret.jpg"
    secret.write_bytes(images.big_jpeg((32, 32)))
    os.symlink(secret, root / "out.jpg")
    os.symlink(photo, root / "in.jpg")
    os.symlink(outside, root / "outdir")
    return {"root": root, "photo": photo, "secret": secret, "tmp": tmp_path}


@pytest.fixture
def store(tree: dict[str, Path]) -> MediaStore:
    return MediaStore(tree["tmp"] / "media", reference_roots=[tree["root"]])


def test_reference_kinds() -> None:
    assert not is_reference("ab/cd/" + "0" * 64 + ".jpg")
    for ref in ("/data/a.jpg", "s3://bucket/a.jpg", "https://cdn.example/a.jpg",
                "gs://b/k.png"):
        assert is_reference(ref)
    assert is_remote_reference("s3://bucket/a.jpg") and not is_remote_reference("/data/a.jpg")
    assert not is_remote_reference("c:/x.jpg") and not is_remote_reference("a b://x")


def test_reference_is_an_absolute_normalised_path_or_the_url(tmp_path: Path,
                                                              monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert MediaStore.reference("x/../a.jpg") == str(tmp_path / "a.jpg")
    assert MediaStore.reference(Path("/data//b/./c.jpg")) == "/data/b/c.jpg"
    assert MediaStore.reference("s3://bucket/k.jpg") == "s3://bucket/k.jpg"
    with pytest.raises(ValueError, match="invalid media location"):
        MediaStore.reference("/data/a\0.jpg")


def test_files_inside_the_roots_are_served(store: MediaStore, tree) -> None:
    assert store.locate(str(tree["photo"])) == tree["photo"].resolve()
    # a link inside the root to a file inside it is fine; the real path is what is served
    assert store.locate(str(tree["root"] / "in.jpg")) == tree["photo"].resolve()


@pytest.mark.parametrize("ref", [
    "{secret}",                      # absolute path outside every root
    "{root}/out.jpg",                # symlink out of the root
    "{root}/outdir/secret.jpg",      # directory symlink out of the root
    "{root}/../private/secret.jpg",  # ..
    "{root}/sub/../../private/secret.jpg",
    "{root}",                        # a directory, not a file
    "{root}/sub/missing.jpg",
    "/etc/passwd",
    "/{root}%2F..%2Fprivate%2Fsecret.jpg",  # encoded traversal is just a missing name here
    "s3://bucket/a.jpg",             # never fetched
    "https://example.com/a.jpg",
])
def test_nothing_outside_the_roots_is_served(store: MediaStore, tree, ref: str) -> None:
    ref = ref.format(**{k: str(v) for k, v in tree.items()})
    with pytest.raises(MediaNotFoundError):
        store.locate(ref)
    with pytest.raises(MediaNotFoundError):
        store.thumbnail(ref, 32)


def test_no_roots_serves_no_referenced_file(tree) -> None:
    store = MediaStore(tree["tmp"] / "media")
    with pytest.raises(MediaNotFoundError):
        store.locate(str(tree["photo"]))


def test_a_root_that_is_itself_a_link_is_resolved(tree) -> None:
    link = tree["tmp"] / "root-link"
    os.symlink(tree["root"], link)
    store = MediaStore(tree["tmp"] / "media", reference_roots=[link])
    assert store.locate(str(link / "sub" / "a.jpg")) == tree["photo"].resolve()
    with pytest.raises(MediaNotFoundError):
        store.locate(str(link / "out.jpg"))


def test_thumbnails_of_referenced_files_are_cached_and_follow_changes(store, tree) -> None:
    ref = str(tree["photo"])
    first = store.thumbnail(ref, 32)
    assert first == store.thumbnail(ref, 32)
    assert len(list((store.root / "thumbs").rglob("*.jpeg"))) == 1
    tree["photo"].write_bytes(images.big_jpeg((200, 50)))
    os.utime(tree["photo"], ns=(1, 10**18))  # a new mtime even on coarse clocks
    assert store.thumbnail(ref, 32) != first


def _vectors(workspace, collection) -> dict:
    rows = {}
    for batch in workspace.catalog.iter_items(collection.info.id):
        for item in batch:
            rows[item.external_id] = item
    return rows


def test_add_items_by_reference(workspace, tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(png_bytes(i))
    items = [NewItem(f"p{i}", f"product {i}", folder / f"{i}.png") for i in range(3)]
    items += [NewItem("url", "remote", png_bytes(7), image_source="s3://bucket/7.png"),
              NewItem("bytes", "no location", png_bytes(8))]
    copied = workspace.create_collection("copied").add_items(items[:4])
    referenced_collection = workspace.create_collection("referenced")
    report = referenced_collection.add_items(items, media=MediaMode.REFERENCE)

    assert (report.new, copied.new) == (4, 4)
    assert [f.external_id for f in report.failures] == ["bytes"]
    assert "file path" in report.failures[0].reason
    refs = {e: r.image_ref for e, r in _vectors(workspace, referenced_collection).items()}
    assert refs == {**{f"p{i}": str(folder / f"{i}.png") for i in range(3)},
                    "url": "s3://bucket/7.png"}
    store_files = [p for p in workspace.media.root.rglob("*") if p.is_file()]
    assert len(store_files) == 4  # the copied collection's, none for the referenced one
    # the same embeddings either way: only where the bytes live differs
    searcher = Searcher(workspace)
    answers = [[(h.external_id, round(h.score, 5)) for h in searcher.search(
        SearchQuery.text(name, "product 1", target=Target.IMAGE, k=4)).hits]
        for name in ("copied", "referenced")]
    assert answers[0] == answers[1] and len(answers[0]) == 4


def test_referenced_changes_are_detected_by_content(workspace, tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(1))
    collection = workspace.create_collection("ref")
    item = NewItem("a", "thing", path)
    assert collection.add_items([item], media=MediaMode.REFERENCE).new == 1
    assert collection.add_items([item], media=MediaMode.REFERENCE).unchanged == 1
    path.write_bytes(png_bytes(2))  # same path, new bytes
    assert collection.add_items([item], media=MediaMode.REFERENCE).changed == 1
    # switching to copy keeps the embedding (same bytes) and moves the image into the store
    assert collection.add_items([item]).unchanged == 1
    ref = workspace.catalog.get_item(collection.info.id, "a").image_ref
    assert not is_reference(ref) and workspace.media.read(ref) == png_bytes(2)
