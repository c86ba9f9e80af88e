"""The `postprocess` object of POST /v1/jobs: how the partner wants the video finished.

One schema on both sides: the object has the names and nesting of
`reelforge.postprocess.v1.PostprocessOptions` (the message postprocess runs from, carried in
`JobSpec.postprocess_options`), its bounds are the shared finishing rules' constants
(`reelforge_core.finishing`), and after the shape checks here the options go through the same
`build_plan` postprocess runs, so a job accepted here is one postprocess will accept.
The watermark is not the partner's to choose: it follows the tenant's tier.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field

from reelforge.postprocess.v1 import postprocess_pb2 as pb
from reelforge_core import finishing
from reelforge_core.content import ContentNotFound, ContentStore
from reelforge_core.media import MediaError
from reelforge_gateway import validation
from reelforge_gateway.api.problems import Problem

Language = Annotated[str, Field(pattern=r"^[a-z]{3}$", description="ISO 639-2, e.g. eng, rus, zho")]
Voice = Annotated[str, Field(description=f"espeak-ng voice, one of {', '.join(validation.VOICES)}")]
Fraction = Annotated[float, Field(gt=0, le=1)]
_CAS_URI = re.compile(r"^cas://sha256/[0-9a-f]{64}(\.[a-z0-9]{1,8})?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NarrationSegment(_Strict):
    start_seconds: float = Field(ge=0, description="When the voice starts, in seconds from the start of the video")
    text: str = Field(min_length=1, max_length=validation.MAX_NARRATION_CHARS)
    voice: Voice | None = Field(default=None, description="Default: narration.voice, then the job's voice")
    language: Language | None = Field(default=None, description="Language of `text`; default from the voice")
    words_per_minute: int | None = Field(
        default=None,
        ge=finishing.MIN_WPM,
        le=finishing.MAX_WPM,
        description="Speed; default narration.words_per_minute",
    )
    translations: dict[Language, Annotated[str, Field(min_length=1, max_length=validation.MAX_NARRATION_CHARS)]] = (
        Field(
            default_factory=dict,
            max_length=finishing.MAX_LANGUAGES,
            description="The text in other languages, for their subtitle tracks",
        )
    )


class Narration(_Strict):
    voice: Voice | None = None
    language: Language | None = Field(default=None, description="Default from the voice")
    words_per_minute: int = Field(default=finishing.DEFAULT_WPM, ge=finishing.MIN_WPM, le=finishing.MAX_WPM)
    segments: list[NarrationSegment] = Field(min_length=1, max_length=finishing.MAX_SEGMENTS)


class SubtitleStyle(_Strict):
    font: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9 _-]{1,64}$",
        description="Font family; default by language (a CJK font for zho, jpn, kor)",
    )
    size_fraction: float | None = Field(default=None, gt=0, le=0.3, description="Of the frame's shorter side")
    outline_fraction: float | None = Field(default=None, gt=0, le=0.5, description="Of the font size")
    color: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{6}$", description="RRGGBB")
    outline_color: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{6}$")
    position: Literal["bottom", "middle", "top"] = "bottom"
    margin_side: float | None = Field(
        default=None,
        gt=0,
        le=0.4,
        description="Safe margins as shares of the frame; default by shape (9:16 "
        "keeps clear of app UI: 0.06 sides, 0.20 bottom, 0.12 top)",
    )
    margin_bottom: float | None = Field(default=None, gt=0, le=0.4)
    margin_top: float | None = Field(default=None, gt=0, le=0.4)


class BurnIn(_Strict):
    language: Language | None = Field(default=None, description="Default: the first subtitle language")
    style: SubtitleStyle = Field(default_factory=SubtitleStyle)


class Subtitles(_Strict):
    disabled: bool = False
    languages: list[Language] = Field(
        default_factory=list,
        max_length=finishing.MAX_LANGUAGES,
        description="One soft track each; default the narration's language",
    )
    srt: bool = Field(default=False, description="An SRT file per language")
    webvtt: bool = Field(default=False, description="A WebVTT file per language")
    burn_in: BurnIn | None = Field(default=None, description="Draw one language into the picture")
    max_chars_per_line: int = Field(default=42, ge=10, le=80)


class Music(_Strict):
    uri: str = Field(pattern=_CAS_URI.pattern, description="Content URI of a stored track (cas://sha256/...)")
    volume_db: float = Field(default=-6.0, ge=-60, le=12)
    ducking: bool = Field(default=True, description="Duck the music under the voice (sidechain compression)")
    duck_ratio: float = Field(default=8.0, ge=1, le=20)
    duck_threshold: float = Field(default=0.02, gt=0, le=1)


class Loudness(_Strict):
    integrated_lufs: float = Field(default=-14.0, ge=-70, le=-5)
    true_peak_dbtp: float = Field(default=-1.0, ge=-9, le=0)
    loudness_range_lu: float = Field(default=11.0, ge=1, le=50)


class Rendition(_Strict):
    name: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$", description="Unique per job; default WIDTHxHEIGHT"
    )
    width: int = Field(ge=finishing.MIN_SIDE, le=finishing.MAX_SIDE, multiple_of=2)
    height: int = Field(ge=finishing.MIN_SIDE, le=finishing.MAX_SIDE, multiple_of=2)
    fit: Literal["pad", "crop"] = Field(default="pad", description="Letterbox on black, or centre crop")


class Thumbnails(_Strict):
    thumbnail: bool = Field(default=False, description="A JPEG poster frame")
    thumbnail_at_seconds: float | None = Field(default=None, ge=0, description="Default: a third of the way in")
    sprite: bool = Field(default=False, description="A sprite sheet and a WebVTT thumbnails track")
    sprite_interval_seconds: float = Field(default=1.0, ge=0.1, le=60)
    sprite_tile_width: int = Field(default=160, ge=32, le=640, multiple_of=2)


def _qc_bound(name: str, description: str) -> Any:
    _, low, high, _ = finishing.QC_FIELDS[name]
    return Field(default=None, ge=low, le=high, allow_inf_nan=False, description=description)


class Qc(_Strict):
    """Quality control thresholds; an absent one takes its default (echoed in GET /v1/jobs/{id}/qc)."""

    enforce: bool = Field(default=True, description="false: report only, never fail the job")
    max_black_seconds: float | None = _qc_bound("max_black_seconds", "Total black seconds allowed; default no limit")
    max_black_fraction: float | None = _qc_bound("max_black_fraction", "Share of the duration; default 0.5")
    max_frozen_seconds: float | None = _qc_bound("max_frozen_seconds", "Total frozen seconds; default no limit")
    max_frozen_fraction: float | None = _qc_bound("max_frozen_fraction", "Default 1 (report only)")
    max_silence_seconds: float | None = _qc_bound("max_silence_seconds", "Total silent seconds; default no limit")
    max_silence_fraction: float | None = _qc_bound("max_silence_fraction", "Default 1 (report only)")
    av_sync_tolerance_ms: float | None = _qc_bound(
        "av_sync_tolerance_ms", "Start and duration difference of sound and picture; default 200"
    )
    max_duration_error_seconds: float | None = _qc_bound("max_duration_error_seconds", "Default 0.25")
    loudness_tolerance_lu: float | None = _qc_bound(
        "loudness_tolerance_lu", "Integrated loudness off the target (when `loudness` is set); default 1"
    )
    black_pixel_threshold: float | None = _qc_bound("black_pixel_threshold", "A pixel this dark is black; 0.10")
    freeze_noise_db: float | None = _qc_bound("freeze_noise_db", "Frozen-picture noise floor; default -60")
    silence_noise_db: float | None = _qc_bound("silence_noise_db", "Silence level; default -50")


class Postprocess(_Strict):
    """Every part is optional; without it the job's `narration` is spoken at 0 s with a soft subtitle track."""

    narration: Narration | None = Field(default=None, description="Voice-over segments (instead of `narration`)")
    subtitles: Subtitles | None = None
    music: Music | None = Field(default=None, description="A music bed; null or absent: none")
    loudness: Loudness | None = Field(default=None, description="Normalise to a target; absent: as mixed")
    renditions: list[Rendition] = Field(
        default_factory=list,
        max_length=finishing.MAX_RENDITIONS,
        description="Extra sizes, e.g. 720x1280 (9:16) and 720x720 (1:1)",
    )
    thumbnails: Thumbnails | None = None
    qc: Qc | None = Field(default=None, description="Quality control thresholds (a template may set them)")


_POSITIONS = {
    "bottom": pb.SubtitleStyle.POSITION_BOTTOM,
    "middle": pb.SubtitleStyle.POSITION_MIDDLE,
    "top": pb.SubtitleStyle.POSITION_TOP,
}


def _set(message: Message, fields: BaseModel, exclude: set[str] | None = None) -> None:
    """Copies the set fields of a part of the object onto the message's field of the same name."""
    for name, value in fields.model_dump(exclude_none=True, exclude=exclude).items():
        setattr(message, name, value)


def to_options(given: Postprocess) -> pb.PostprocessOptions:
    """The partner's object as the PostprocessOptions message (field for field, by name)."""
    options = pb.PostprocessOptions()
    if given.narration is not None:
        _set(options.narration, given.narration, exclude={"segments"})
        for segment in given.narration.segments:
            added = options.narration.segments.add()
            _set(added, segment, exclude={"translations"})
            added.translations.update(segment.translations)
    if given.subtitles is not None:
        _set(options.subtitles, given.subtitles, exclude={"languages", "burn_in"})
        options.subtitles.languages.extend(given.subtitles.languages)
        if given.subtitles.burn_in is not None:
            burn, style = options.subtitles.burn_in, given.subtitles.burn_in.style
            _set(burn, given.subtitles.burn_in, exclude={"style"})
            _set(burn.style, style, exclude={"position"})
            burn.style.position = _POSITIONS[style.position]
    if given.music is not None:
        _set(options.music, given.music, exclude={"ducking"})
        options.music.no_ducking = not given.music.ducking
    if given.loudness is not None:
        options.loudness.enabled = True
        _set(options.loudness, given.loudness)
    for rendition in given.renditions:
        fit = pb.Rendition.FIT_CROP if rendition.fit == "crop" else pb.Rendition.FIT_PAD
        _set(options.renditions.add(fit=fit), rendition, exclude={"fit"})
    if given.thumbnails is not None:
        _set(options.thumbnails, given.thumbnails)
    if given.qc is not None:
        _set(options.qc, given.qc, exclude={"enforce"})
        options.qc.disabled = not given.qc.enforce
    return options


def _invalid(detail: str, field: str) -> Problem:
    return Problem(
        422,
        "invalid_postprocess",
        "The postprocess options are invalid",
        detail,
        errors=[{"field": field, "message": detail, "type": "value_error"}],
    )


def _voices(given: Postprocess) -> list[tuple[str, str]]:
    if given.narration is None:
        return []
    found = [("postprocess.narration.voice", given.narration.voice)]
    found += [(f"postprocess.narration.segments.{i}.voice", s.voice) for i, s in enumerate(given.narration.segments)]
    return [(field, voice) for field, voice in found if voice is not None]


def check(
    given: Postprocess, seconds: float, narration: str | None, voice: str, content: ContentStore
) -> pb.PostprocessOptions:
    """The options for JobSpec.postprocess_options, or a 422 `invalid_postprocess` naming the field."""
    for field, segment_voice in _voices(given):
        if segment_voice not in validation.VOICES:
            raise _invalid(f"voice must be one of {', '.join(validation.VOICES)}", field)
    if given.narration is not None:
        if narration:
            raise _invalid("give either `narration` or `postprocess.narration`, not both", "postprocess.narration")
        for i, segment in enumerate(given.narration.segments):
            validation.check_text(segment.text, "narration text")
            if segment.start_seconds >= seconds:
                raise _invalid(
                    f"starts at {segment.start_seconds:g} s, after the video ends ({seconds:g} s)",
                    f"postprocess.narration.segments.{i}.start_seconds",
                )
    if given.music is not None:
        try:
            stored = content.exists(given.music.uri)
        except ContentNotFound:
            stored = False
        if not stored:
            raise _invalid("no stored track has this URI", "postprocess.music.uri")
    options = to_options(given)
    try:
        finishing.build_plan(options, narration or "", voice)
    except finishing.InvalidOptions as exc:
        raise _invalid(exc.message, f"postprocess.{exc.field}" if exc.field else "postprocess") from None
    except MediaError as exc:
        raise _invalid(exc.message, "postprocess") from None
    return options


def texts(given: Postprocess | None) -> list[str]:
    """Every text the partner wants spoken or shown, for moderation."""
    if given is None or given.narration is None:
        return []
    return [t for s in given.narration.segments for t in (s.text, *s.translations.values())]
