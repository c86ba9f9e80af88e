"""OpenAI-style cursor pages: `after` names the last item of the previous page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from reelforge_gateway.api.problems import Problem

Position = TypeVar("Position")


async def position_after(after: str | None, find: Callable[[str], Awaitable[Position | None]],
                         noun: str) -> Position | None:
    """The keyset position of `after` (None for the first page); an id the caller cannot see is a 400."""
    if not after:
        return None
    position = await find(after)
    if position is None:
        raise Problem(400, "invalid_cursor", "Invalid 'after'", f"No {noun} {after!r} for this key", param="after")
    return position
