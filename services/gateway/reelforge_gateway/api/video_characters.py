"""OpenAI video characters (`client.videos.create_character` / `get_character`): a named reference video,
uploaded once as MP4 and kept in the content store, readable only by its tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from reelforge_gateway import store, validation
from reelforge_gateway.api.auth import Caller, authenticate, require_scope
from reelforge_gateway.api.problems import OPENAI_ERRORS, Problem
from reelforge_gateway.api.videos import parse, read_body, store_upload

router = APIRouter(prefix="/v1/videos/characters", tags=["openai-compatible videos"])
AuthCaller = Annotated[Caller, Depends(authenticate)]
UPLOAD_PATHS = ("/v1/videos/characters",)


class CharacterCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)

    @field_validator("name")
    @classmethod
    def has_text(cls, value: str) -> str:
        return validation.required_text(value, "name")


class Character(BaseModel):
    id: str
    name: str
    created_at: int


@router.post("", response_model=Character, responses=OPENAI_ERRORS,
             openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["name", "video"],
                 "properties": {"name": {"type": "string"}, "video": {"type": "string", "format": "binary"}}}}}}})
async def create_character(request: Request, caller: AuthCaller) -> Character:
    require_scope(caller, "jobs:write")
    fields, upload = await read_body(request, "video")
    body = parse(CharacterCreate, fields)
    if upload is None:
        raise Problem(400, "invalid_value", "video is required", "Upload an MP4 as the video part", param="video")
    uri = await store_upload(request, upload, "video", only=(".mp4",))
    row = await request.app.state.pool.fetchrow(
        "INSERT INTO video_characters (character_id, tenant_id, name, video_uri) VALUES ($1, $2, $3, $4)"
        " RETURNING *", store.new_id("char"), caller.tenant_id, body.name, uri)
    return Character(id=row["character_id"], name=row["name"], created_at=int(row["created_at"].timestamp()))


@router.get("/{character_id}", response_model=Character, responses=OPENAI_ERRORS)
async def get_character(character_id: str, request: Request, caller: AuthCaller) -> Character:
    require_scope(caller, "jobs:read")
    row = None
    if validation.is_id(character_id):
        row = await request.app.state.pool.fetchrow(
            "SELECT * FROM video_characters WHERE character_id = $1 AND tenant_id = $2", character_id,
            caller.tenant_id)
    if row is None:
        raise Problem(404, "character_not_found", "No such character",
                      f"No character {character_id[:64]!r} for this API key")
    return Character(id=row["character_id"], name=row["name"], created_at=int(row["created_at"].timestamp()))
