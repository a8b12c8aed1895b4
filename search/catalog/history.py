"""What was done to a collection: index builds, jobs and the items they failed on.

Shares the catalog's session factory (`Catalog.history`); `xmodal-index status` shows the
recent jobs and failures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from search.catalog.models import FailureRow, IndexVersionRow, JobRow, utcnow
from search.catalog.records import FailureRecord, IndexVersionRecord, JobRecord


class CatalogHistory:
    def __init__(self, session: Callable[[], AbstractContextManager[Session]]) -> None:
        self._session = session

    def record_index_version(self, collection_id: int, *, version: str, spec: str,
                             vector_count: int, model_identity: str) -> None:
        with self._session() as s:
            s.execute(update(IndexVersionRow).where(IndexVersionRow.collection_id ==
                                                    collection_id).values(is_current=False))
            s.add(IndexVersionRow(collection_id=collection_id, version=version, spec=spec,
                                  vector_count=vector_count, model_identity=model_identity,
                                  is_current=True))

    def current_index_version(self, collection_id: int) -> IndexVersionRecord | None:
        with self._session() as s:
            row = s.scalar(select(IndexVersionRow).where(
                IndexVersionRow.collection_id == collection_id, IndexVersionRow.is_current))
            if row is None:
                return None
            return IndexVersionRecord(row.version, row.spec, row.vector_count,
                                      row.model_identity, row.created_at)

    def start_job(self, collection_id: int, kind: str, params: dict[str, Any]) -> int:
        with self._session() as s:
            row = JobRow(collection_id=collection_id, kind=kind, params=params)
            s.add(row)
            s.flush()
            return row.id

    def finish_job(self, job_id: int, *, status: str, counts: dict[str, Any],
                   error: str | None = None) -> None:
        with self._session() as s:
            s.execute(update(JobRow).where(JobRow.id == job_id).values(
                status=status, counts=counts, error=error, finished_at=utcnow()))

    def recent_jobs(self, collection_id: int, limit: int = 10) -> list[JobRecord]:
        with self._session() as s:
            rows = s.scalars(select(JobRow).where(JobRow.collection_id == collection_id)
                             .order_by(JobRow.id.desc()).limit(limit))
            return [JobRecord(r.id, r.kind, r.status, dict(r.counts or {}), r.error,
                              r.started_at, r.finished_at) for r in rows]

    def record_failures(self, collection_id: int, job_id: int | None,
                        failures: Sequence[tuple[str | None, str, str]]) -> None:
        """Each failure is (external_id, stage, reason)."""
        with self._session() as s:
            s.add_all(FailureRow(collection_id=collection_id, job_id=job_id, external_id=e,
                                 stage=stage, reason=reason) for e, stage, reason in failures)

    def recent_failures(self, collection_id: int, limit: int = 20) -> list[FailureRecord]:
        with self._session() as s:
            rows = s.scalars(select(FailureRow).where(FailureRow.collection_id == collection_id)
                             .order_by(FailureRow.id.desc()).limit(limit))
            return [FailureRecord(r.external_id, r.stage, r.reason, r.job_id, r.created_at)
                    for r in rows]
