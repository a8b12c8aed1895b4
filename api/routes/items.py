"""Items: put one (JSON or multipart upload), put a batch, get, delete. Writes are
embedded at once: searchable in this process immediately, in other workers within
one reload tick."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api import queries
from api.config import ApiConfig
from api.deps import ConfigDep, RunnerDep, WorkspaceDep, WriterDep, WriteRunnerDep
from api.problems import ApiError, problem_responses
from api.routes.collections import NamePath
from api.schemas import (
    BatchReport,
    GenerationPublic,
    ItemBatch,
    ItemFailurePublic,
    ItemPublic,
    ItemWrite,
    ItemWritten,
    VectorPublic,
)
from search import (
    MAX_EXTERNAL_ID,
    AddReport,
    Collection,
    ImageTooLargeError,
    InvalidInputError,
    ItemDetail,
    Modality,
    NewItem,
    UnknownItemError,
    Workspace,
    decode_image,
)

router = APIRouter(prefix="/v1/collections/{name}/items", tags=["items"])
ItemPath = Annotated[str, Path(min_length=1, max_length=MAX_EXTERNAL_ID, pattern=r"^[^\x00]+$",
                               description="The item's external id")]
WRITE_ERRORS = problem_responses(400, 401, 403, 404, 413, 415, 422, 503)
PUT_BODY = {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/ItemWrite"}},
    "multipart/form-data": {"schema": {"$ref": "#/components/schemas/ItemUpload"}}}}


def item_public(item: ItemDetail, root_path: str) -> ItemPublic:
    image_url, thumbnail_url = queries.media_urls(item.shown_image_ref, root_path)
    generation = item.generation if item.generated else None
    return ItemPublic(
        item_id=item.item_id, external_id=item.external_id, text=item.text,
        attributes=item.attributes, status=item.status, created_at=item.created_at,
        updated_at=item.updated_at, image_url=image_url, thumbnail_url=thumbnail_url,
        generated=item.generated,
        generation=GenerationPublic(generator=generation.generator, model=generation.model,
                                    prompt=generation.prompt, seed=generation.seed,
                                    created_at=generation.created_at) if generation else None,
        vectors=[VectorPublic(modality=Modality(v.modality), source=v.source)
                 for v in item.vectors])


def new_item(external_id: str, write: ItemWrite, image: bytes | None,
             config: ApiConfig) -> NewItem:
    """Checks the image under the API's limits first, so a bad one is a typed 413/422.

    Item texts may be long descriptions (stored in full; the model reads the start), so
    only the schema's hard cap applies to them, not the query limit."""
    if image is not None:
        decode_image(image, limits=config.decode_limits())
    return NewItem(external_id, text=write.text, image=image, attributes=write.attributes)


def write_items(collection: Collection, items: Sequence[NewItem]) -> AddReport:
    # add_items takes the collection's cross-process write lock and first replays what
    # other workers or the indexer committed, so no two writers collide
    return collection.add_items(items)


async def _parse_put(request: Request, config: ApiConfig) -> tuple[ItemWrite, bytes | None]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind == "application/json":
            write = ItemWrite.model_validate_json(await request.body())
            image = queries.decode_base64(write.image, config) if write.image else None
            return write, image
        if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
            return await _parse_multipart(request, config)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    raise ApiError(415, "unsupported-media-type",
                   "send application/json or multipart/form-data")


async def _parse_multipart(request: Request, config: ApiConfig) -> tuple[ItemWrite, bytes | None]:
    async with request.form(max_files=1, max_fields=8) as form:
        raw_attributes = form.get("attributes") or "{}"
        try:
            attributes = json.loads(raw_attributes) if isinstance(raw_attributes, str) else None
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"attributes is not valid JSON: {exc}") from None
        text = form.get("text")
        write = ItemWrite.model_validate({"text": text if isinstance(text, str) else None,
                                          "attributes": attributes})
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            return write, None
        data = await upload.read(config.max_upload_bytes + 1)
    if len(data) > config.max_upload_bytes:
        raise ImageTooLargeError(f"upload is over the {config.max_upload_bytes} byte limit")
    return write, data


def _put(workspace: Workspace, config: ApiConfig, name: str, external_id: str,
         write: ItemWrite, image: bytes | None, root_path: str) -> tuple[ItemWritten, bool]:
    collection = workspace.collection(name)
    report = write_items(collection, [new_item(external_id, write, image, config)])
    if report.failures:
        raise InvalidInputError(report.failures[0].reason)
    state = "new" if report.new else "changed" if report.changed else "unchanged"
    item = collection.catalog.get_item(collection.info.id, external_id, name)
    written = ItemWritten(state=state, **dict(item_public(item, root_path)))
    return written, bool(report.new)


@router.put("/{external_id}", response_model=ItemWritten, openapi_extra={"requestBody": PUT_BODY},
            responses={201: {"model": ItemWritten, "description": "Created"}, **WRITE_ERRORS},
            summary="Create or replace an item (text, attributes, optional image)")
async def put_item(name: NamePath, external_id: ItemPath, request: Request,
                   workspace: WorkspaceDep, config: ConfigDep, run: WriteRunnerDep,
                   _writer: WriterDep, response: Response) -> ItemWritten:
    write, image = await _parse_put(request, config)
    root = request.scope.get("root_path", "")
    item, created = await run(
        lambda: _put(workspace, config, name, external_id, write, image, root))
    response.status_code = 201 if created else 200
    return item


def batch_report(report: AddReport) -> BatchReport:
    return BatchReport(new=report.new, changed=report.changed, unchanged=report.unchanged,
                       failed=report.failed, failures=[
                           ItemFailurePublic(external_id=f.external_id, stage=f.stage,
                                             reason=f.reason) for f in report.failures])


def _batch(workspace: Workspace, config: ApiConfig, name: str, batch: ItemBatch) -> BatchReport:
    if len(batch.items) > config.max_batch_items:
        raise InvalidInputError(f"{len(batch.items)} items; the limit is "
                                f"{config.max_batch_items} per request")
    items = [new_item(e.external_id, e, queries.decode_base64(e.image, config)
                      if e.image else None, config) for e in batch.items]
    return batch_report(write_items(workspace.collection(name), items))


@router.post("", response_model=BatchReport, responses=WRITE_ERRORS,
             summary="Create or replace many items; bad items are reported, the rest go in")
async def put_items(name: NamePath, batch: ItemBatch, workspace: WorkspaceDep,
                    config: ConfigDep, run: WriteRunnerDep, _writer: WriterDep) -> BatchReport:
    return await run(lambda: _batch(workspace, config, name, batch))


def _get(workspace: Workspace, name: str, external_id: str, root_path: str) -> ItemPublic:
    collection = workspace.collection(name)
    return item_public(collection.catalog.get_item(collection.info.id, external_id, name),
                       root_path)


@router.get("/{external_id}", response_model=ItemPublic,
            responses=problem_responses(404, 422, 503), summary="One item")
async def get_item(name: NamePath, external_id: ItemPath, request: Request,
                   workspace: WorkspaceDep, run: RunnerDep) -> ItemPublic:
    root = request.scope.get("root_path", "")
    return await run(lambda: _get(workspace, name, external_id, root))


def _delete(workspace: Workspace, name: str, external_id: str) -> None:
    collection = workspace.collection(name)
    if collection.catalog.item_id(collection.info.id, external_id) is None:
        raise UnknownItemError(name, external_id)
    collection.delete_items([external_id])  # locks and syncs, like add_items


@router.delete("/{external_id}", status_code=204, response_class=Response,
               responses=problem_responses(401, 403, 404, 422, 503),
               summary="Delete an item; it leaves search results at once")
async def delete_item(name: NamePath, external_id: ItemPath, workspace: WorkspaceDep,
                      run: WriteRunnerDep, _writer: WriterDep) -> Response:
    await run(lambda: _delete(workspace, name, external_id))
    return Response(status_code=204)
