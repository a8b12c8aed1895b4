"""`xmodal-index add --media reference`: same embeddings, no copies, sources referenced."""

import json
from pathlib import Path

from indexer.cli import main
from indexer.operations import index_source
from indexer.pipeline import IndexOptions
from search import MediaMode, is_reference
from search.models.encoder import load_encoder
from search.settings import Settings
from search.workspace import Workspace
from tests.indexer.conftest import write_catalog
from tests.utils.snapshots import snapshot


def _refs(ws, name: str) -> dict[str, str | None]:
    return {row[0]: row[2] for row in snapshot(ws, name)[0]}


def _stored_files(home: Path) -> list[Path]:
    return [p for p in (home / "media").rglob("*") if p.is_file()]


def test_cli_reference_mode_stores_locations_not_copies(tmp_path, tiny_model, capsys):
    model = str(load_encoder(tiny_model, device="cpu").save(tmp_path / "model"))
    source = write_catalog(tmp_path / "src", 24, broken=True)
    home = tmp_path / "home"
    argv = ["add", str(source), "--model", model, "--no-progress", "--json", "--home",
            str(home), "--workers", "2"]
    assert main([*argv, "-c", "ref", "--media", "reference"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["indexed"], summary["failed"]) == (24, 7)  # bad rows fail as in copy mode
    assert _stored_files(home) == []
    assert main([*argv, "-c", "copy"]) == 0
    capsys.readouterr()
    ws = Workspace.open(Settings(home=home, device="cpu"))
    refs, copied = _refs(ws, "ref"), _refs(ws, "copy")
    with_image = {e for e, r in refs.items() if r}
    assert with_image == {e for e, r in copied.items() if r} and len(with_image) == 20
    for external_id in with_image:
        ref = refs[external_id]
        assert is_reference(ref) and Path(ref).is_absolute()
        assert Path(ref).read_bytes() == ws.media.read(copied[external_id])
        assert Path(ref).parent == (source.parent / "images").absolute()
    # the same items, hashes and answers: only where the image lives differs
    ref_snap, copy_snap = snapshot(ws, "ref"), snapshot(ws, "copy")
    assert [r[:2] + r[3:] for r in ref_snap[0]] == [r[:2] + r[3:] for r in copy_snap[0]]
    assert ref_snap[1] == copy_snap[1]
    ws.close()


def test_rerun_by_reference_skips_unchanged_and_catches_changed(ws, tmp_path):
    source = write_catalog(tmp_path / "src", 12)
    options = IndexOptions(workers=0, progress=False, media=MediaMode.REFERENCE)
    assert index_source(ws, "r", source, options=options).indexed == 12
    write_catalog(tmp_path / "src", 12, seed=100)  # every image's bytes change
    again = index_source(ws, "r", source, options=options)
    assert (again.updated, again.unchanged) == (10, 2)  # the two text-only items stay
