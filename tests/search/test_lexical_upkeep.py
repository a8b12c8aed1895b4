"""Upkeep of the lexical index: a fragmented FTS5 index is merged into one segment, a GIN
pending list is moved into the index, keyword results stay the same, and an index that
is already tidy costs nothing. Runs on SQLite and PostgreSQL."""

import pytest
from sqlalchemy import text

from search.catalog import lexical
from search.collection.collection import NewItem
from search.engine import Searcher
from search.lifecycle import maintain
from search.query import SearchMode, SearchQuery
from search.settings import Settings
from search.workspace import Workspace

WORDS = ["red", "lamp", "oak", "chair", "linen", "boot", "brass", "mug"]
QUERIES = ["red lamp", "oak chair", "brass", "linen boot mug", "chiar"]


def _fragment(workspace) -> None:
    """A collection written in 24 small transactions, with FTS5's automerge off (SQLite)
    or autovacuum off (PostgreSQL), so that the index is left as the writes made it."""
    catalog = workspace.catalog
    collection = workspace.create_collection("shop")
    with catalog.session() as s:
        if catalog.engine.dialect.name == "postgresql":
            s.execute(text("ALTER TABLE lexical_docs SET (autovacuum_enabled = false)"))
        else:
            s.execute(text("INSERT INTO lexical_fts(lexical_fts, rank) VALUES ('automerge', 0)"))
    for batch in range(24):
        items = [NewItem(f"i{batch}-{j}", text=f"{WORDS[(batch + j) % 8]} "
                         f"{WORDS[(batch * 3 + j) % 8]} item {batch} {j}",
                         attributes={"brand": WORDS[j % 8]}) for j in range(5)]
        assert collection.add_items(items).failed == 0


def _keyword_results(workspace) -> list[list[tuple[str, float]]]:
    searcher = Searcher(workspace)
    return [[(h.external_id, round(h.score, 9)) for h in searcher.search(
        SearchQuery.text("shop", q, mode=SearchMode.KEYWORD, k=50)).hits] for q in QUERIES]


def test_maintenance_tidies_a_fragmented_index_and_results_stay_the_same(workspace):
    _fragment(workspace)
    catalog, before = workspace.catalog, _keyword_results(workspace)
    postgres = catalog.engine.dialect.name == "postgresql"
    if not postgres:
        with catalog.session() as s:
            assert lexical.segments(s.connection()) > lexical.MAX_SEGMENTS
    first = maintain(workspace)
    assert first.lexical_tidied > 0 and not first.errors
    if not postgres:
        with catalog.session() as s:
            assert lexical.segments(s.connection()) == 1
    assert _keyword_results(workspace) == before
    assert maintain(workspace).lexical_tidied == 0  # already tidy: nothing done


@pytest.fixture
def sqlite_workspace(tmp_path, tiny_model):
    """The budget is SQLite's (PostgreSQL moves its pending list in one call)."""
    settings = Settings(home=tmp_path / "home", model=tiny_model, device="cpu", offline=True,
                        database_url=f"sqlite:///{tmp_path / 'catalog.db'}")
    workspace = Workspace.open(settings)
    yield workspace
    workspace.close()


def test_the_merge_stops_at_its_time_budget_and_goes_on_next_time(sqlite_workspace):
    _fragment(sqlite_workspace)
    catalog = sqlite_workspace.catalog
    assert lexical.tidy(catalog.session, "sqlite", budget_s=0.0) == 0
    with catalog.session() as s:
        assert lexical.segments(s.connection()) > lexical.MAX_SEGMENTS
    assert lexical.tidy(catalog.session, "sqlite") >= 1
    with catalog.session() as s:
        assert lexical.segments(s.connection()) == 1


def test_an_index_job_leaves_the_lexical_index_tidy(workspace, tmp_path):
    """A read-only server never runs maintenance: the job that wrote the rows tidies."""
    import json

    from indexer.operations import index_source
    from indexer.pipeline import IndexOptions

    _fragment(workspace)
    catalog, before = workspace.catalog, _keyword_results(workspace)
    source = tmp_path / "more.jsonl"
    source.write_text("".join(json.dumps({"id": f"new-{i}", "text": f"walnut stool {i}"})
                              + "\n" for i in range(3)))
    summary = index_source(workspace, "shop", source,
                           options=IndexOptions(workers=0, progress=False))
    assert summary.indexed == 3 and summary.lexical_tidied > 0
    if catalog.engine.dialect.name != "postgresql":
        with catalog.session() as s:
            assert lexical.segments(s.connection()) == 1
    # the new items share no query word: same matches in the same order (scores move
    # with the table's row count)
    assert [[i for i, _ in r] for r in _keyword_results(workspace)] == \
        [[i for i, _ in r] for r in before]
    assert maintain(workspace).lexical_tidied == 0
