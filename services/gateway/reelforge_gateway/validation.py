"""What a job may ask for. Pure rules shared by the API models and their tests."""

from __future__ import annotations

import re

SIZES: dict[str, tuple[int, int]] = {
    "640x360": (640, 360),
    "1280x720": (1280, 720),
    "1920x1080": (1920, 1080),
    "720x1280": (720, 1280),
    "1080x1920": (1080, 1920),
    "1024x1792": (1024, 1792),
    "1792x1024": (1792, 1024),
    "1024x1024": (1024, 1024),
    "3840x2160": (3840, 2160),
}
MODELS = ("animatic",)
MIN_SECONDS, MAX_SECONDS = 1.0, 60.0
MAX_PROMPT_CHARS = 4000
MAX_NARRATION_CHARS = 1000
VOICES = ("en-us", "en", "en-gb", "ru", "cmn", "de", "fr", "es")


def parse_size(size: str) -> tuple[int, int]:
    try:
        return SIZES[size]
    except KeyError:
        raise ValueError(f"size must be one of {', '.join(SIZES)}") from None

MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 40
MAX_METADATA_VALUE_CHARS = 500
JOB_STATES = ("queued", "admitted", "rendering", "postprocessing", "completed", "failed", "cancelled", "expired")


def check_metadata(metadata: dict[str, str]) -> None:
    if len(metadata) > MAX_METADATA_KEYS:
        raise ValueError(f"metadata may have at most {MAX_METADATA_KEYS} keys")
    for key, value in metadata.items():
        check_text(key, "metadata keys")
        check_text(value, "metadata values")
        if not key or len(key) > MAX_METADATA_KEY_CHARS or not key.isprintable():
            raise ValueError(f"metadata keys must be 1 to {MAX_METADATA_KEY_CHARS} printable characters")
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise ValueError(f"metadata values may have at most {MAX_METADATA_VALUE_CHARS} characters")


_ID = re.compile(r"^[a-z]{2,8}_[0-9a-f]{24}$")


def is_id(value: str) -> bool:
    """Ids we issue (job_..., ten_...); anything else cannot name a row, so it is never queried."""
    return bool(_ID.match(value))


def check_text(value: str, field: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it as bad input rather than fail on insert.
    if "\x00" in value:
        raise ValueError(f"{field} must not contain NUL characters")
    return value


def required_text(value: str, field: str) -> str:
    """Stripped text that must say something (a prompt, a name)."""
    if not value.strip():
        raise ValueError(f"{field} must contain text")
    return check_text(value.strip(), field)
