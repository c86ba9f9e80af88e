"""The moderation hook: prompts naming a blocked term are refused before a job exists (no I/O here)."""

from __future__ import annotations

import re
from collections.abc import Iterable


class Moderator:
    def __init__(self, blocked_terms: Iterable[str]) -> None:
        terms = sorted({term.strip().lower() for term in blocked_terms if term.strip()}, key=len, reverse=True)
        # Whole words or phrases, case-insensitive: "gun" blocks "a gun" but not "begun".
        self._pattern = (re.compile(r"(?<!\w)(" + "|".join(re.escape(t) for t in terms) + r")(?!\w)", re.IGNORECASE)
                         if terms else None)

    def blocked_term(self, *texts: str | None) -> str | None:
        """The first blocked term found in any of the texts, or None."""
        if self._pattern is None:
            return None
        for text in texts:
            if text and (match := self._pattern.search(text)):
                return match.group(1).lower()
        return None
