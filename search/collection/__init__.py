"""A collection's write path: items in -> prepared (validated, hashed, decoded) -> embedded
-> catalogued -> indexed; the write lock; generating missing pictures.

- `collection.py` — `Collection`: add, delete, sync, save, rebuild, stats.
- `preparing.py` — picklable preparation stages shared by the local and Ray indexers.
- `backfill.py` — `generate_missing`: pictures for items that have only text.
- `locks.py` — the per-collection inter-process write lock.
"""
