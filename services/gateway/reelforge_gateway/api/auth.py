"""Bearer API-key authentication: the caller's tenant, or a 401 problem."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from fastapi import Request

from reelforge_gateway import keys, store
from reelforge_gateway.api.problems import Problem

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="reelforge"'}


@dataclass(frozen=True)
class Caller:
    tenant_id: str
    key_id: str
    scopes: frozenset[str]


async def authenticate(request: Request) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "missing_api_key", "An API key is required",
                      "Send it as 'Authorization: Bearer <key>'", headers=_CHALLENGE)
    token = token.strip()
    prefix = keys.prefix_of(token)
    pool: asyncpg.Pool = request.app.state.pool
    row = await store.find_active_key(pool, prefix) if prefix else None
    if row is None or not keys.matches(token, row["key_hash"]):
        raise Problem(401, "invalid_api_key", "The API key is not valid", headers=_CHALLENGE)
    return Caller(tenant_id=row["tenant_id"], key_id=row["key_id"], scopes=frozenset(row["scopes"]))


def require_scope(caller: Caller, scope: str) -> None:
    if scope not in caller.scopes:
        raise Problem(403, "insufficient_scope", f"This key lacks the {scope!r} scope")
