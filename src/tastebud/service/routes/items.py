"""Items: create or update, change some fields (``available``), read, search, delete."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from tastebud.errors import UnknownIdError
from tastebud.service.routes.deps import Routes, context, read_key, write_key
from tastebud.service.schemas import (
    Deleted,
    ItemIn,
    ItemOut,
    ItemPatch,
    Limit,
    Offset,
    PathId,
    QueryText,
)


def add_routes(router: APIRouter) -> None:
    """The item routes, added to ``router`` (the app's)."""
    routes = Routes(router, "items")
    routes.add("PUT", "/items/{item_id}", put_item, write_key, ItemOut)
    routes.add("PATCH", "/items/{item_id}", patch_item, write_key, ItemOut)
    routes.add("GET", "/items/{item_id}", get_item, read_key, ItemOut)
    routes.add("GET", "/items", list_items, read_key, list[ItemOut])
    routes.add("DELETE", "/items/{item_id}", delete_item, write_key, Deleted)


def put_item(
    request: Request, item_id: PathId, body: Annotated[ItemIn | None, Body()] = None
) -> Mapping[str, Any]:
    """Create an item (available unless told otherwise) or update the fields given."""
    ctx = context(request)
    fields = {} if body is None else body.model_dump(exclude_unset=True)
    clear_title = "title" in fields and fields["title"] is None
    item = ctx.storage.upsert_item(item_id, **{k: v for k, v in fields.items() if v is not None})
    if clear_title:
        item = ctx.storage.update_item(item_id, title=None)
    ctx.engine.catalog.put(item)
    return item


def patch_item(request: Request, item_id: PathId, body: ItemPatch) -> Mapping[str, Any]:
    """Change some fields of an item; ``available: false`` takes it out of every list
    at once (it keeps its events)."""
    ctx = context(request)
    fields = body.model_dump(exclude_unset=True)
    if "attributes" in fields and fields["attributes"] is None:
        fields["attributes"] = {}
    if "available" in fields and fields["available"] is None:
        del fields["available"]
    item = ctx.storage.update_item(item_id, **fields)
    ctx.engine.catalog.put(item)
    return item


def get_item(request: Request, item_id: PathId) -> Mapping[str, Any]:
    item = context(request).storage.get_item(item_id)
    if item is None:
        raise UnknownIdError(f"unknown item {item_id!r}")
    return item


def list_items(
    request: Request,
    q: Annotated[QueryText | None, Query(max_length=200, description="title/id contains")] = None,
    limit: Annotated[Limit, Query()] = 100,
    offset: Annotated[Offset, Query()] = 0,
) -> Sequence[Mapping[str, Any]]:
    return context(request).storage.list_items(limit=limit, offset=offset, query=q)


def delete_item(request: Request, item_id: PathId) -> dict[str, Any]:
    """Delete an item and its events."""
    ctx = context(request)
    if not ctx.storage.delete_item(item_id):
        raise UnknownIdError(f"unknown item {item_id!r}")
    ctx.engine.forget_item(item_id)
    ctx.engine.catalog.drop(item_id)
    return {"deleted": item_id}
