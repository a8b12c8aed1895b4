"""The SQL catalog: what every vector means (collections, items, vectors, generations), what
was done to a collection (jobs, failures, index versions), and the Alembic migrations.

- `catalog.py` — `Catalog`: engine, session factory and collections; composes the row
  groups `items.py` (`ItemRows`, `ItemInput`), `vectors.py` (`VectorRows`, `VectorInfo`)
  and `generations.py` (`GenerationRows`) over `transactions.py` (one session, IN-list chunks);
  `bulk.py` (`BulkRows`) loads many new items at once through `loader.py` (COPY on
  PostgreSQL, batched executemany on SQLite).
- `models.py` — SQLAlchemy 2 table models; `Modality`.
- `filter_sql.py` — metadata filters translated into SQL.
- `history.py` — `CatalogHistory`: jobs, failures, index builds.
- `lookup.py` — read-only item lookups by internal vector id.
- `records.py` — the typed records the catalog hands out (`ItemDetail`, `JobRecord`, ...).
- `schema.py` — Alembic migrations (under a PostgreSQL advisory lock) and the schema check.
"""
