"""PostprocessOptions (proto) -> a validated, fully defaulted finishing plan. Pure: no I/O, no ffmpeg.

Shared by the gateway (which checks a partner's options when the job is submitted) and postprocess
(which runs the plan), so both apply the same rules and bounds. A rule that fails raises
`InvalidOptions`, naming the field as the partner wrote it (e.g. `qc.max_black_seconds`).

Every step is optional. With no options the plan reproduces the original finish: the job's
narration (if any) as one segment at 0 s that is re-spoken faster until it fits, a soft mov_text
subtitle track in the narration's language, the video stream-copied, and QC with the defaults.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from google.protobuf.message import DecodeError

from reelforge.postprocess.v1 import postprocess_pb2
from reelforge_core.media import MediaError

DEFAULT_VOICE = "en-us"
DEFAULT_WPM = 160
MIN_WPM, MAX_WPM = 80, 450
MAX_SEGMENTS = 50
MAX_SEGMENT_CHARS = 2000
MAX_RENDITIONS = 6
MAX_LANGUAGES = 8
MIN_SIDE, MAX_SIDE = 64, 3840
DEFAULT_WATERMARK = "Made with Reelforge"

_LANGUAGE = re.compile(r"[a-z]{3}")
_COLOR = re.compile(r"[0-9A-Fa-f]{6}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_FONT = re.compile(r"[A-Za-z0-9 _-]{1,64}")

# espeak-ng voice prefix -> ISO 639-2/T language of the speech (tags on tracks and sidecars).
VOICE_LANGUAGES = {
    "en": "eng", "ru": "rus", "cmn": "zho", "zh": "zho", "yue": "zho", "de": "deu", "fr": "fra",
    "es": "spa", "it": "ita", "pt": "por", "ja": "jpn", "ko": "kor", "ar": "ara", "hi": "hin",
    "uk": "ukr", "pl": "pol", "nl": "nld", "tr": "tur", "sv": "swe",
}  # fmt: skip


# Burn-in fonts by subtitle language, from the Debian packages the run script installs: DejaVu Sans
# (fonts-dejavu-core) has Latin, Cyrillic and Greek; WenQuanYi Micro Hei (fonts-wqy-microhei, 5 MB
# installed against 90 MB for Noto CJK) has Chinese, Japanese kana and Korean Hangul.
LATIN_FONT = "DejaVu Sans"
CJK_FONT = "WenQuanYi Micro Hei"
FONTS_BY_LANGUAGE = {"zho": CJK_FONT, "jpn": CJK_FONT, "kor": CJK_FONT}


def font_for_language(language: str) -> str:
    return FONTS_BY_LANGUAGE.get(language, LATIN_FONT)


def language_of_voice(voice: str) -> str:
    return VOICE_LANGUAGES.get(voice.split("-")[0].split("+")[0].lower(), "und")


@dataclass(frozen=True)
class Segment:
    start_s: float
    text: str
    voice: str
    words_per_minute: int
    language: str  # ISO 639-2 of the speech
    translations: dict[str, str] = field(default_factory=dict)

    def text_in(self, language: str) -> str:
        return self.text if language == self.language else self.translations.get(language, "")


@dataclass(frozen=True)
class NarrationPlan:
    language: str
    segments: tuple[Segment, ...]
    fit_by_speeding_up: bool = True  # re-speak a segment faster when it overruns its window


@dataclass(frozen=True)
class SubtitleStyle:
    font: str = LATIN_FONT
    size_fraction: float = 0.05  # of the frame's shorter side
    outline_fraction: float = 0.08  # of the font size
    color: str = "FFFFFF"
    outline_color: str = "000000"
    position: str = "bottom"  # bottom | middle | top
    margin_side: float = 0.0  # 0: the default for the frame's shape
    margin_bottom: float = 0.0
    margin_top: float = 0.0


@dataclass(frozen=True)
class BurnInPlan:
    language: str
    style: SubtitleStyle


@dataclass(frozen=True)
class SubtitlesPlan:
    languages: tuple[str, ...]
    srt: bool = False
    webvtt: bool = False
    burn_in: BurnInPlan | None = None
    max_chars: int = 42


@dataclass(frozen=True)
class MusicPlan:
    uri: str
    volume_db: float = -6.0
    ducking: bool = True
    duck_ratio: float = 8.0
    duck_threshold: float = 0.02


@dataclass(frozen=True)
class LoudnessPlan:
    integrated_lufs: float = -14.0
    true_peak_dbtp: float = -1.0
    loudness_range_lu: float = 11.0


@dataclass(frozen=True)
class RenditionPlan:
    name: str
    width: int
    height: int
    fit: str = "pad"  # pad | crop


@dataclass(frozen=True)
class ThumbnailsPlan:
    thumbnail: bool = False
    thumbnail_at_s: float | None = None  # None: a third of the way in
    sprite: bool = False
    sprite_interval_s: float = 1.0
    sprite_tile_width: int = 160


@dataclass(frozen=True)
class WatermarkPlan:
    text: str = DEFAULT_WATERMARK
    opacity: float = 0.6


@dataclass(frozen=True)
class QcPlan:
    enforce: bool = True
    max_black_fraction: float = 0.5
    max_frozen_fraction: float = 1.0
    max_silence_fraction: float = 1.0
    max_black_s: float | None = None  # total seconds; None: no limit in seconds
    max_frozen_s: float | None = None
    max_silence_s: float | None = None
    max_av_offset_s: float = 0.2
    max_duration_error_s: float = 0.25
    loudness_tolerance_lu: float = 1.0
    black_pixel_threshold: float = 0.10
    freeze_noise_db: float = -60.0
    silence_noise_db: float = -50.0

    def thresholds(self) -> dict[str, float | bool | None]:
        """The thresholds under the partner-facing names (QcThresholds), as the QC report echoes them."""
        return {
            "enforce": self.enforce,
            "max_black_seconds": self.max_black_s, "max_black_fraction": self.max_black_fraction,
            "max_frozen_seconds": self.max_frozen_s, "max_frozen_fraction": self.max_frozen_fraction,
            "max_silence_seconds": self.max_silence_s, "max_silence_fraction": self.max_silence_fraction,
            "av_sync_tolerance_ms": round(self.max_av_offset_s * 1000, 3),
            "max_duration_error_seconds": self.max_duration_error_s,
            "loudness_tolerance_lu": self.loudness_tolerance_lu,
            "black_pixel_threshold": self.black_pixel_threshold,
            "freeze_noise_db": self.freeze_noise_db,
            "silence_noise_db": self.silence_noise_db,
        }  # fmt: skip


@dataclass(frozen=True)
class FinishPlan:
    narration: NarrationPlan | None = None
    subtitles: SubtitlesPlan | None = None
    music: MusicPlan | None = None
    loudness: LoudnessPlan | None = None
    renditions: tuple[RenditionPlan, ...] = ()
    thumbnails: ThumbnailsPlan = ThumbnailsPlan()
    watermark: WatermarkPlan | None = None
    qc: QcPlan = QcPlan()

    @property
    def needs_audio(self) -> bool:
        return self.narration is not None or self.music is not None or self.loudness is not None


class InvalidOptions(MediaError):
    """A finishing option breaks a rule; `field` is its path inside `postprocess` ("" for the whole)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__("invalid_input", message)
        self.field = field


def _invalid(message: str, field: str = "") -> InvalidOptions:
    return InvalidOptions(message, field)


def parse_options(raw: bytes) -> postprocess_pb2.PostprocessOptions:
    options = postprocess_pb2.PostprocessOptions()
    try:
        options.ParseFromString(raw)
    except DecodeError as exc:
        raise _invalid("postprocess options are not a valid PostprocessOptions message") from exc
    return options


def _wpm(value: int, default: int) -> int:
    wpm = value or default
    if not MIN_WPM <= wpm <= MAX_WPM:
        raise _invalid(f"words_per_minute must be between {MIN_WPM} and {MAX_WPM}, got {wpm}")
    return wpm


def _language(value: str, what: str) -> str:
    if not _LANGUAGE.fullmatch(value):
        raise _invalid(f"{what} must be an ISO 639-2 code such as 'eng', got {value!r}")
    return value


def _narration(options: postprocess_pb2.PostprocessOptions, job_narration: str, job_voice: str) -> NarrationPlan | None:
    given = options.narration
    voice = given.voice or job_voice or DEFAULT_VOICE
    wpm = _wpm(given.words_per_minute, DEFAULT_WPM)
    language = _language(given.language or language_of_voice(voice), "narration language")
    if not given.segments:
        if not job_narration.strip():
            return None
        return NarrationPlan(language, (Segment(0.0, job_narration, voice, wpm, language),))
    if len(given.segments) > MAX_SEGMENTS:
        raise _invalid(f"at most {MAX_SEGMENTS} narration segments, got {len(given.segments)}", "narration.segments")
    segments = []
    for n, raw in enumerate(sorted(given.segments, key=lambda s: s.start_seconds), 1):
        if raw.start_seconds < 0 or not raw.text.strip() or len(raw.text) > MAX_SEGMENT_CHARS:
            raise _invalid(f"narration segment {n} needs a start >= 0 and 1-{MAX_SEGMENT_CHARS} characters of text")
        if len(raw.translations) > MAX_LANGUAGES or any(len(t) > MAX_SEGMENT_CHARS for t in raw.translations.values()):
            raise _invalid(
                f"narration segment {n}: at most {MAX_LANGUAGES} translations of {MAX_SEGMENT_CHARS} characters"
            )
        translations = {_language(k, "translation language"): v for k, v in raw.translations.items()}
        spoken = (
            _language(raw.language, "segment language")
            if raw.language
            else (language_of_voice(raw.voice) if raw.voice else language)
        )
        segments.append(
            Segment(
                raw.start_seconds, raw.text, raw.voice or voice, _wpm(raw.words_per_minute, wpm), spoken, translations
            )
        )
    return NarrationPlan(language, tuple(segments))


_POSITIONS = {0: "bottom", 1: "bottom", 2: "middle", 3: "top"}


def _fraction(value: float, default: float, high: float, what: str) -> float:
    if value == 0:
        return default
    if not 0 < value <= high:
        raise _invalid(f"{what} must be between 0 and {high:g}, got {value:g}")
    return value


def _style(raw: postprocess_pb2.SubtitleStyle, language: str) -> SubtitleStyle:
    """The partner's style; without a font, the one that has the language's script."""
    default = SubtitleStyle(font=font_for_language(language))
    for name, value in (("color", raw.color), ("outline_color", raw.outline_color)):
        if value and not _COLOR.fullmatch(value):
            raise _invalid(f"subtitle {name} must be RRGGBB hex, got {value!r}")
    if raw.font and not _FONT.fullmatch(raw.font):
        raise _invalid(f"subtitle font must be a plain family name, got {raw.font!r}")
    return SubtitleStyle(
        font=raw.font or default.font,
        size_fraction=_fraction(raw.size_fraction, default.size_fraction, 0.3, "size_fraction"),
        outline_fraction=_fraction(raw.outline_fraction, default.outline_fraction, 0.5, "outline_fraction"),
        color=(raw.color or default.color).upper(),
        outline_color=(raw.outline_color or default.outline_color).upper(),
        position=_POSITIONS.get(raw.position, "bottom"),
        margin_side=_fraction(raw.margin_side, 0.0, 0.4, "margin_side"),
        margin_bottom=_fraction(raw.margin_bottom, 0.0, 0.4, "margin_bottom"),
        margin_top=_fraction(raw.margin_top, 0.0, 0.4, "margin_top"),
    )


def _subtitles(options: postprocess_pb2.PostprocessOptions, narration: NarrationPlan | None) -> SubtitlesPlan | None:
    given = options.subtitles
    if narration is None or given.disabled:
        return None
    if len(given.languages) > MAX_LANGUAGES:
        raise _invalid(f"at most {MAX_LANGUAGES} subtitle languages, got {len(given.languages)}", "subtitles.languages")
    languages = tuple(dict.fromkeys(_language(x, "subtitle language") for x in given.languages)) or (
        narration.language,
    )
    for language in languages:
        missing = [n for n, s in enumerate(narration.segments, 1) if not s.text_in(language)]
        if missing:
            raise _invalid(f"subtitle language {language!r} needs a translation of narration segment {missing[0]}",
                           "subtitles.languages")
    burn_in = None
    if given.HasField("burn_in"):
        language = given.burn_in.language or languages[0]
        if language not in languages:
            raise _invalid(f"burn-in language {language!r} is not among the subtitle languages {list(languages)}",
                           "subtitles.burn_in.language")
        burn_in = BurnInPlan(language, _style(given.burn_in.style, language))
    max_chars = given.max_chars_per_line or 42
    if not 10 <= max_chars <= 80:
        raise _invalid(f"max_chars_per_line must be between 10 and 80, got {max_chars}", "subtitles.max_chars_per_line")
    return SubtitlesPlan(languages, given.srt, given.webvtt, burn_in, max_chars)


def _ratio(value: float) -> float:
    if value and not 1 <= value <= 20:
        raise _invalid(f"music duck_ratio must be between 1 and 20, got {value:g}")
    return value or 8.0


def _music(options: postprocess_pb2.PostprocessOptions) -> MusicPlan | None:
    if not options.HasField("music"):
        return None
    given = options.music
    if not given.uri:
        raise _invalid("music needs the content URI of a track", "music.uri")
    if not -60 <= given.volume_db <= 12:
        raise _invalid(f"music volume_db must be between -60 and 12, got {given.volume_db:g}", "music.volume_db")
    return MusicPlan(
        uri=given.uri,
        volume_db=given.volume_db or -6.0,
        ducking=not given.no_ducking,
        duck_ratio=_ratio(given.duck_ratio),
        duck_threshold=_fraction(given.duck_threshold, 0.02, 1.0, "duck_threshold"),
    )


def _loudness(options: postprocess_pb2.PostprocessOptions) -> LoudnessPlan | None:
    given = options.loudness
    if not given.enabled:
        return None
    plan = LoudnessPlan(
        integrated_lufs=given.integrated_lufs or -14.0,
        true_peak_dbtp=given.true_peak_dbtp or -1.0,
        loudness_range_lu=given.loudness_range_lu or 11.0,
    )
    if not -70 <= plan.integrated_lufs <= -5:
        raise _invalid(f"integrated_lufs must be between -70 and -5, got {plan.integrated_lufs:g}")
    if not -9 <= plan.true_peak_dbtp <= 0:
        raise _invalid(f"true_peak_dbtp must be between -9 and 0, got {plan.true_peak_dbtp:g}")
    if not 1 <= plan.loudness_range_lu <= 50:
        raise _invalid(f"loudness_range_lu must be between 1 and 50, got {plan.loudness_range_lu:g}")
    return plan


def _renditions(options: postprocess_pb2.PostprocessOptions) -> tuple[RenditionPlan, ...]:
    if len(options.renditions) > MAX_RENDITIONS:
        raise _invalid(f"at most {MAX_RENDITIONS} renditions, got {len(options.renditions)}", "renditions")
    plans: list[RenditionPlan] = []
    for raw in options.renditions:
        name = raw.name or f"{raw.width}x{raw.height}"
        if not _NAME.fullmatch(name) or any(p.name == name for p in plans):
            raise _invalid(f"rendition names must be unique and simple (letters, digits, _.-), got {name!r}",
                           f"renditions.{len(plans)}.name")
        for side in (raw.width, raw.height):
            if side % 2 or not MIN_SIDE <= side <= MAX_SIDE:
                raise _invalid(f"rendition {name}: sides must be even and between {MIN_SIDE} and {MAX_SIDE}")
        plans.append(RenditionPlan(name, raw.width, raw.height, "crop" if raw.fit == raw.FIT_CROP else "pad"))
    return tuple(plans)


def _thumbnails(options: postprocess_pb2.PostprocessOptions) -> ThumbnailsPlan:
    given = options.thumbnails
    interval = given.sprite_interval_seconds or 1.0
    tile = given.sprite_tile_width or 160
    if not 0.1 <= interval <= 60 or not 32 <= tile <= 640 or tile % 2:
        raise _invalid("sprite_interval_seconds must be 0.1-60 and sprite_tile_width even, 32-640")
    if given.thumbnail_at_seconds < 0:
        raise _invalid("thumbnail_at_seconds must not be negative")
    return ThumbnailsPlan(
        thumbnail=given.thumbnail,
        thumbnail_at_s=given.thumbnail_at_seconds or None,
        sprite=given.sprite,
        sprite_interval_s=interval,
        sprite_tile_width=tile,
    )


def _watermark(options: postprocess_pb2.PostprocessOptions, free_tier: bool) -> WatermarkPlan | None:
    given = options.watermark
    if given.disabled or not (given.enabled or free_tier):
        return None
    text = " ".join((given.text or DEFAULT_WATERMARK).split())
    if not 1 <= len(text) <= 64 or not text.isprintable():
        raise _invalid("watermark text must be 1-64 printable characters")
    opacity = _fraction(given.opacity, 0.6, 1.0, "watermark opacity")
    return WatermarkPlan(text, opacity)


# QcThresholds field -> (QcPlan field, low, high, scale to the plan's unit); every bound inclusive.
QC_FIELDS: dict[str, tuple[str, float, float, float]] = {
    "max_black_fraction": ("max_black_fraction", 0.0, 1.0, 1.0),
    "max_frozen_fraction": ("max_frozen_fraction", 0.0, 1.0, 1.0),
    "max_silence_fraction": ("max_silence_fraction", 0.0, 1.0, 1.0),
    "max_black_seconds": ("max_black_s", 0.0, 3600.0, 1.0),
    "max_frozen_seconds": ("max_frozen_s", 0.0, 3600.0, 1.0),
    "max_silence_seconds": ("max_silence_s", 0.0, 3600.0, 1.0),
    "av_sync_tolerance_ms": ("max_av_offset_s", 0.0, 5000.0, 0.001),
    "max_duration_error_seconds": ("max_duration_error_s", 0.0, 60.0, 1.0),
    "loudness_tolerance_lu": ("loudness_tolerance_lu", 0.1, 20.0, 1.0),
    "black_pixel_threshold": ("black_pixel_threshold", 0.0, 1.0, 1.0),
    "freeze_noise_db": ("freeze_noise_db", -120.0, 0.0, 1.0),
    "silence_noise_db": ("silence_noise_db", -120.0, 0.0, 1.0),
}


def _qc(options: postprocess_pb2.PostprocessOptions) -> QcPlan:
    values: dict[str, float] = {}
    for descriptor, value in options.qc.ListFields():  # explicitly set fields only
        if descriptor.name not in QC_FIELDS:
            continue
        name, low, high, scale = QC_FIELDS[descriptor.name]
        if not (math.isfinite(value) and low <= value <= high):
            field = f"qc.{descriptor.name}"
            raise _invalid(f"{field} must be between {low:g} and {high:g}, got {value:g}", field)
        values[name] = value * scale
    return replace(QcPlan(), enforce=not options.qc.disabled, **values)


def build_plan(
    options: postprocess_pb2.PostprocessOptions, job_narration: str = "", job_voice: str = "", free_tier: bool = False
) -> FinishPlan:
    """Validate the options against the job and fill every default; MediaError `invalid_input` if bad."""
    narration = _narration(options, job_narration, job_voice)
    return FinishPlan(
        narration=narration,
        subtitles=_subtitles(options, narration),
        music=_music(options),
        loudness=_loudness(options),
        renditions=_renditions(options),
        thumbnails=_thumbnails(options),
        watermark=_watermark(options, free_tier),
        qc=_qc(options),
    )
