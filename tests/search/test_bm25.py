"""BM25 computed in Python over a stage's candidates equals FTS5's bm25() on the same
rows (SQLite only: PostgreSQL ranks with ts_rank), and either plan ranks alike."""

import pytest
from sqlalchemy import text

from search.catalog import bm25, keyword, lexical
from search.catalog.catalog import open_catalog
from search.catalog.items import ItemInput

DOCS = [
    ("Red wool scarf", {"keywords": ["winter", "wool", "gift"], "brand": "Acme"}),
    ("Running shoes, running socks", {"keywords": ["sport", "runner"], "brand": "Bolt"}),
    ("Café crème mug", {"keywords": ["kitchen", "coffee"], "brand": "Crème_Brûlée"}),
    ("red_wool blanket", {"keywords": ["home"], "brand": "Acme"}),
    ("Blue mug — ceramic", {"keywords": ["kitchen", "gift", "gift"], "brand": "Lumo"}),
    ("Naïve art print", {"keywords": ["art", "wall"], "brand": "Ñandú"}),
    ("x² puzzle 日本語 box", {"keywords": ["toys"], "brand": "Acme"}),
    ("Wool", {"keywords": [], "brand": "Acme"}),
] + [(f"plain item number{i} with filler words", {"keywords": ["misc"], "brand": "Zed"})
     for i in range(30)]

QUERIES = ["red wool", "running", "cafe creme", "mug gift", "red_wool", "naive nandu",
           "x² 日本語", "wool scarf gift kitchen", "acme", "runners sock",
           "running runs"]  # two query words, one stem: each word is its own phrase


@pytest.fixture
def shop(tmp_path):
    catalog = open_catalog(f"sqlite:///{tmp_path / 'bm25.db'}")
    collection = catalog.create_collection("shop", model="m", pretrained=None,
                                           weights_identity="w", dim=4)
    catalog.upsert_items(collection.id, [ItemInput(f"i{n}", t, None, a, f"h{n}")
                                         for n, (t, a) in enumerate(DOCS)])
    yield catalog, collection.id
    catalog.close()


@pytest.mark.parametrize("query", QUERIES)
def test_scores_equal_fts5_bm25_on_the_same_rows(shop, query):
    catalog, cid = shop
    parsed = catalog.keyword.parse(cid, query)
    match = keyword._fts5_match(parsed, keyword.Stage.ANY)
    with catalog.session() as s:
        rows = s.execute(text(
            "SELECT rowid, -bm25(lexical_fts, 2.0, 1.0), text, attrs FROM lexical_fts "
            "WHERE lexical_fts MATCH :q"), {"q": match}).all()
        assert rows, query
        mine = bm25.Bm25().score(s, parsed.terms(), [(r[2], r[3]) for r in rows])
    assert mine == pytest.approx([r[1] for r in rows], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("query", QUERIES)
def test_both_plans_rank_alike(shop, query, monkeypatch):
    catalog, cid = shop
    parsed = catalog.keyword.parse(cid, query)
    found = {}
    for plan, row_cost in (("python", 0.0), ("fts5", 1e12)):
        monkeypatch.setattr(bm25, "SCORE_NS_PER_ROW", row_cost)
        catalog.keyword.search(cid, parsed, 5, [])  # counts and caches frequencies
        found[plan] = catalog.keyword.search(cid, parsed, 5, [])
    assert [m.item_id for m in found["python"]] == [m.item_id for m in found["fts5"]]
    assert [m.score for m in found["python"]] == pytest.approx(
        [m.score for m in found["fts5"]], rel=1e-9)


def test_table_statistics_are_fts5s(shop):
    catalog, _ = shop
    with catalog.session() as s:
        rows, average = bm25.table_stats(s)
    words = [w for t, a in DOCS for w in lexical.words(f"{t} {' '.join(a['keywords'])} "
                                                       f"{a['brand']}")]
    tokens = bm25.Tokenizer().tokens(words)  # FTS5's own tokens of each word
    assert rows == len(DOCS)
    assert average == pytest.approx(sum(len(tokens[w]) for w in words) / len(DOCS))


def test_document_frequencies_are_counted_again_when_the_table_moves(shop, monkeypatch):
    catalog, cid = shop
    frequencies = bm25.DocumentFrequencies()
    with catalog.session() as s:
        assert frequencies.get(s, ["acme"], len(DOCS)) == {"acme": 4}
    catalog.upsert_items(cid, [ItemInput(f"new{i}", "acme thing", None, {}, f"n{i}")
                               for i in range(3)])
    with catalog.session() as s:
        # same table size: the cached count stands (a statistic, not an exact figure)
        assert frequencies.get(s, ["acme"], len(DOCS)) == {"acme": 4}
        assert frequencies.get(s, ["acme"], len(DOCS) + 3) == {"acme": 7}  # moved > 1 %
        monkeypatch.setattr(bm25, "DF_TTL_S", -1.0)
        assert frequencies.cached(["acme"], len(DOCS) + 3) == {}  # expired
