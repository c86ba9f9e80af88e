"""What a job may ask for. Pure rules shared by the API models and their tests."""

from __future__ import annotations

SIZES: dict[str, tuple[int, int]] = {
    "640x360": (640, 360),
    "1280x720": (1280, 720),
    "1920x1080": (1920, 1080),
    "720x1280": (720, 1280),
    "1080x1920": (1080, 1920),
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
