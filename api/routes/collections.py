"""Collections: list, describe, create, drop; their search fields (read, declare)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from api.deps import RunnerDep, WorkspaceDep, WriterDep
from api.problems import problem_responses
from api.schemas import (
    CollectionCreate,
    CollectionList,
    CollectionPublic,
    IndexPublic,
    SearchFieldsPublic,
    SearchFieldsWrite,
)
from search import COLLECTION_NAME_PATTERN, Collection, Modality, Workspace

router = APIRouter(prefix="/v1/collections", tags=["collections"])
NamePath = Annotated[str, Path(pattern=COLLECTION_NAME_PATTERN,
                               description="Collection name")]


def collection_public(collection: Collection) -> CollectionPublic:
    stats = collection.stats()
    indexes = [IndexPublic(modality=m, spec=index.spec, vectors=index.vectors,
                           version=index.version)
               for m in Modality if (index := stats.indexes.get(m.value)) is not None]
    info = collection.info
    return CollectionPublic(name=info.name, model=info.model, pretrained=info.pretrained,
                            dim=info.dim, items=stats.items, vectors=stats.vectors,
                            indexes=indexes)


def _list(workspace: Workspace) -> CollectionList:
    return CollectionList(collections=[collection_public(workspace.collection(info.name))
                                       for info in workspace.list_collections()])


@router.get("", response_model=CollectionList, responses=problem_responses(503),
            summary="Every collection with its counts, model and indexes")
async def list_collections(workspace: WorkspaceDep, run: RunnerDep) -> CollectionList:
    return await run(lambda: _list(workspace))


@router.get("/{name}", response_model=CollectionPublic,
            responses=problem_responses(404, 422, 503), summary="One collection")
async def get_collection(name: NamePath, workspace: WorkspaceDep,
                         run: RunnerDep) -> CollectionPublic:
    return await run(lambda: collection_public(workspace.collection(name)))


@router.post("", response_model=CollectionPublic, status_code=201,
             responses=problem_responses(400, 401, 403, 409, 413, 422, 503),
             summary="Create an empty collection (server's default model)")
async def create_collection(body: CollectionCreate, workspace: WorkspaceDep, run: RunnerDep,
                            _writer: WriterDep) -> CollectionPublic:
    return await run(lambda: collection_public(workspace.create_collection(body.name)))


def _drop(workspace: Workspace, name: str) -> None:
    workspace.drop_collection(name)


@router.delete("/{name}", status_code=204, response_class=Response,
               responses=problem_responses(401, 403, 404, 422, 503),
               summary="Drop a collection with its items, vectors and indexes")
async def drop_collection(name: NamePath, workspace: WorkspaceDep, run: RunnerDep,
                          _writer: WriterDep) -> Response:
    await run(lambda: _drop(workspace, name))
    return Response(status_code=204)


def _fields(collection: Collection, reindexed: int | None = None) -> SearchFieldsPublic:
    declared = collection.search_fields()
    searchable = list(declared.searchable) if declared.searchable is not None else None
    return SearchFieldsPublic(collection=collection.name, searchable_fields=searchable,
                              identifier_fields=list(declared.identifiers),
                              reindexed=reindexed)


def _declare(collection: Collection, body: SearchFieldsWrite) -> SearchFieldsPublic:
    reindexed = collection.set_search_fields(body.searchable_fields, body.identifier_fields)
    return _fields(collection, reindexed)


@router.get("/{name}/settings", response_model=SearchFieldsPublic,
            responses=problem_responses(404, 422, 503),
            summary="The attributes keyword search reads, and the identifier attributes")
async def get_search_fields(name: NamePath, workspace: WorkspaceDep,
                            run: RunnerDep) -> SearchFieldsPublic:
    return await run(lambda: _fields(workspace.collection(name)))


@router.put("/{name}/settings", response_model=SearchFieldsPublic,
            responses=problem_responses(400, 401, 403, 404, 413, 422, 503),
            summary="Declare the searchable and identifier attributes (rebuilds the "
                    "collection's keyword index; a field no item has is refused)")
async def put_search_fields(name: NamePath, body: SearchFieldsWrite, workspace: WorkspaceDep,
                            run: RunnerDep, _writer: WriterDep) -> SearchFieldsPublic:
    return await run(lambda: _declare(workspace.collection(name), body))
