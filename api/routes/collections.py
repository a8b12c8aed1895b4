"""Collections: list, describe, create, drop."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from api.deps import ServicesDep, WriterDep
from api.problems import problem_responses
from api.schemas import (
    COLLECTION_NAME,
    CollectionCreate,
    CollectionList,
    CollectionPublic,
    IndexPublic,
)
from api.schemas import Modality as PublicModality
from search import Collection, Modality, Workspace

router = APIRouter(prefix="/v1/collections", tags=["collections"])
NamePath = Annotated[str, Path(pattern=COLLECTION_NAME, description="Collection name")]


def collection_public(collection: Collection) -> CollectionPublic:
    stats = collection.stats()
    indexes = [IndexPublic(modality=PublicModality(m.value), **stats[f"{m.value}_index"])
               for m in Modality]
    info = collection.info
    return CollectionPublic(name=info.name, model=info.model, pretrained=info.pretrained,
                            dim=info.dim, items=stats["items"], vectors=stats["vectors"],
                            indexes=indexes)


def _list(workspace: Workspace) -> CollectionList:
    return CollectionList(collections=[collection_public(workspace.collection(info.name))
                                       for info in workspace.list_collections()])


@router.get("", response_model=CollectionList, responses=problem_responses(503),
            summary="Every collection with its counts, model and indexes")
async def list_collections(services: ServicesDep) -> CollectionList:
    return await services.run(lambda: _list(services.workspace))


@router.get("/{name}", response_model=CollectionPublic,
            responses=problem_responses(404, 422, 503), summary="One collection")
async def get_collection(name: NamePath, services: ServicesDep) -> CollectionPublic:
    return await services.run(lambda: collection_public(services.workspace.collection(name)))


@router.post("", response_model=CollectionPublic, status_code=201,
             responses=problem_responses(400, 401, 403, 409, 413, 422, 503),
             summary="Create an empty collection (server's default model)")
async def create_collection(body: CollectionCreate, services: ServicesDep,
                            _writer: WriterDep) -> CollectionPublic:
    return await services.run(
        lambda: collection_public(services.workspace.create_collection(body.name)))


def _drop(workspace: Workspace, name: str) -> None:
    workspace.drop_collection(name)


@router.delete("/{name}", status_code=204, response_class=Response,
               responses=problem_responses(401, 403, 404, 422, 503),
               summary="Drop a collection with its items, vectors and indexes")
async def drop_collection(name: NamePath, services: ServicesDep, _writer: WriterDep) -> Response:
    await services.run(lambda: _drop(services.workspace, name))
    return Response(status_code=204)
