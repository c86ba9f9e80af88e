"""Subtitle cues and their formats: SRT, WebVTT, and ASS for burn-in. Pure: no I/O.

Cues for one narration segment cover exactly the segment's spoken interval, split into lines at
sentence, then phrase, then word boundaries, each line lasting in proportion to its characters.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from reelforge_core.finishing import SubtitleStyle

MIN_CUE_CHARS = 10

# Latin punctuation ends a sentence or phrase only before whitespace ("2.0" stays whole); CJK
# full-width punctuation is not followed by spaces.
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])\s+|(?<=[\u3002\uff01\uff1f])\s*(?=\S)")
_PHRASE_END = re.compile(r"(?<=[,;:])\s+|(?<=[\uff0c\uff1b\u3001])\s*(?=\S)|\s+(?=[-\u2013\u2014]\s)")


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def is_wide(ch: str) -> bool:
    """CJK scripts and full-width punctuation: written without spaces between words."""
    return "\u2e80" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\uff00" <= ch <= "\uffef"


def _joiner(left: str, right: str) -> str:
    return "" if is_wide(left[-1]) or is_wide(right[0]) else " "


def _pack(phrases: Sequence[str], max_chars: int) -> Iterator[str]:
    """Greedily join phrases into lines of at most max_chars; over-long phrases are word-wrapped."""
    current = ""
    for phrase in phrases:
        candidate = f"{current}{_joiner(current, phrase)}{phrase}" if current else phrase
        if len(candidate) <= max_chars:
            current = candidate
            continue
        if current:
            yield current
        *full, current = textwrap.wrap(phrase, max_chars, break_long_words=True) or [""]
        yield from full
    if current:
        yield current


def cue_lines(text: str, max_chars: int) -> list[str]:
    """Sentences, then phrases, then words: every line at most max_chars, in reading order."""
    lines: list[str] = []
    for sentence in _SENTENCE_END.split(" ".join(text.split())):
        if sentence:
            lines.extend(_pack([p for p in _PHRASE_END.split(sentence) if p], max_chars))
    return lines


def subtitle_cues(text: str, speech_seconds: float, max_chars: int = 42) -> list[Cue]:
    """Cues covering [0, speech_seconds], back to back, each lasting in proportion to its length."""
    if max_chars < MIN_CUE_CHARS:
        raise ValueError(f"max_chars must be at least {MIN_CUE_CHARS}, got {max_chars}")
    lines = cue_lines(text, max_chars)
    if not lines:
        return []
    if not speech_seconds > 0:
        raise ValueError(f"speech_seconds must be positive, got {speech_seconds}")
    total = sum(len(line) for line in lines)
    bounds, seen = [0.0], 0
    for line in lines:
        seen += len(line)
        bounds.append(round(speech_seconds * seen / total, 3))
    return [Cue(bounds[i], bounds[i + 1], line) for i, line in enumerate(lines)]


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _timing(cue: Cue, separator: str) -> str:
    return f"{_timestamp(cue.start_s, separator)} --> {_timestamp(cue.end_s, separator)}"


def to_srt(cues: Sequence[Cue]) -> str:
    blocks = [f"{n}\n{_timing(cue, ',')}\n{cue.text.replace('-->', '->')}\n" for n, cue in enumerate(cues, 1)]
    return "\n".join(blocks)


def _vtt_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_webvtt(cues: Sequence[Cue]) -> str:
    blocks = [f"{_timing(cue, '.')}\n{_vtt_text(cue.text)}\n" for cue in cues]
    return "\n".join(["WEBVTT\n", *blocks])


def segment_cues(text: str, start_s: float, duration_s: float, max_chars: int = 42) -> list[Cue]:
    """Cues for one spoken segment: they start when it starts and end when it ends."""
    return [
        Cue(round(start_s + c.start_s, 3), round(start_s + c.end_s, 3), c.text)
        for c in subtitle_cues(text, duration_s, max_chars)
    ]


# --- ASS (burn-in) ----------------------------------------------------------------------------

_ALIGNMENT = {"bottom": 2, "middle": 5, "top": 8}


def safe_margins(width: int, height: int, side: float, bottom: float, top: float) -> tuple[int, int, int]:
    """(side, bottom, top) margins in pixels. Vertical video keeps clear of the app UI that covers
    the bottom fifth and the top of the frame; other shapes use the classic title-safe 5-8%."""
    vertical = height > width * 1.2
    side = side or (0.06 if vertical else 0.05)
    bottom = bottom or (0.20 if vertical else 0.08)
    top = top or (0.12 if vertical else 0.08)
    return round(side * width), round(bottom * height), round(top * height)


def _ass_colour(rrggbb: str) -> str:
    return f"&H00{rrggbb[4:6]}{rrggbb[2:4]}{rrggbb[0:2]}".upper()


def _ass_time(seconds: float) -> str:
    centis = round(seconds * 100)
    hours, centis = divmod(centis, 360_000)
    minutes, centis = divmod(centis, 6000)
    secs, centis = divmod(centis, 100)
    return f"{hours}:{minutes:02d}:{secs:02d}.{centis:02d}"


def _ass_text(text: str) -> str:
    # `{...}` is an override block and a backslash starts a tag in ASS: neutralise both.
    return text.replace("\\", "\u2216").replace("{", "(").replace("}", ")").replace("\n", " ")


def to_ass(cues: Sequence[Cue], width: int, height: int, style: SubtitleStyle) -> str:
    """An ASS script drawn at the frame's own pixel size, so sizes and margins are exact."""
    size = max(8, round(min(width, height) * style.size_fraction))
    outline = max(1, round(size * style.outline_fraction))
    side, bottom, top = safe_margins(width, height, style.margin_side, style.margin_bottom, style.margin_top)
    margin_v = top if style.position == "top" else bottom
    fields = [
        "Default", style.font, str(size), _ass_colour(style.color), "&H000000FF", _ass_colour(style.outline_color),
        "&H80000000", "0", "0", "0", "0", "100", "100", "0", "0", "1", str(outline), "0",
        str(_ALIGNMENT[style.position]), str(side), str(side), str(margin_v), "1",
    ]  # fmt: skip
    events = [
        f"Dialogue: 0,{_ass_time(c.start_s)},{_ass_time(c.end_s)},Default,,0,0,0,,{_ass_text(c.text)}" for c in cues
    ]
    return "\n".join(
        [
            "[Script Info]", "ScriptType: v4.00+", f"PlayResX: {width}", f"PlayResY: {height}",
            "WrapStyle: 0", "ScaledBorderAndShadow: yes", "",
            "[V4+ Styles]",
            "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, "
            "Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, "
            "Alignment, MarginL, MarginR, MarginV, Encoding",
            "Style: " + ",".join(fields), "",
            "[Events]", "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
            *events, "",
        ]
    )  # fmt: skip


def vtt_timestamp(seconds: float) -> str:
    return _timestamp(seconds, ".")
