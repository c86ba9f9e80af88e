"""Pure parts: options -> plan (defaults, validation), ASS burn-in scripts, thumbnails VTT, QC judging."""

from __future__ import annotations

import pytest

from reelforge.postprocess.v1 import postprocess_pb2 as pb
from reelforge_core.finishing import (
    QC_FIELDS,
    FinishPlan,
    InvalidOptions,
    LoudnessPlan,
    QcPlan,
    SubtitleStyle,
    build_plan,
    language_of_voice,
    parse_options,
)
from reelforge_core.media import MediaError
from reelforge_postprocess import audio, loudness, qc
from reelforge_postprocess.subtitles import Cue, safe_margins, segment_cues, to_ass
from reelforge_postprocess.thumbnails import sprite_layout, thumbnails_vtt


def test_no_options_reproduce_the_original_finish() -> None:
    plan = build_plan(pb.PostprocessOptions(), "Pure water.", "en-us")
    assert plan.narration is not None and plan.subtitles is not None
    assert [(s.start_s, s.text, s.voice, s.words_per_minute) for s in plan.narration.segments] == [
        (0.0, "Pure water.", "en-us", 160)
    ]
    assert plan.narration.fit_by_speeding_up
    assert (plan.subtitles.languages, plan.subtitles.srt, plan.subtitles.webvtt) == (("eng",), False, False)
    assert plan.subtitles.burn_in is None
    assert (plan.music, plan.loudness, plan.renditions, plan.watermark) == (None, None, (), None)
    assert not plan.thumbnails.thumbnail and not plan.thumbnails.sprite
    assert plan.qc == QcPlan()
    assert build_plan(pb.PostprocessOptions(), "", "en-us") == FinishPlan()


def test_segments_are_sorted_and_take_their_voice_language() -> None:
    options = pb.PostprocessOptions()
    options.narration.segments.add(start_seconds=4, text="Привет.", voice="ru", translations={"eng": "Hi."})
    options.narration.segments.add(start_seconds=0.5, text="Hello.", words_per_minute=200)
    options.subtitles.languages.extend(["eng"])
    plan = build_plan(options, "ignored when segments are given", "en-gb")
    assert plan.narration is not None
    first, second = plan.narration.segments
    assert (first.start_s, first.voice, first.words_per_minute, first.language) == (0.5, "en-gb", 200, "eng")
    assert (second.start_s, second.voice, second.language) == (4, "ru", "rus")
    assert second.text_in("eng") == "Hi." and second.text_in("rus") == "Привет."
    assert [language_of_voice(v) for v in ("en-us", "ru", "cmn", "zh", "xx")] == ["eng", "rus", "zho", "zho", "und"]


def test_options_round_trip_through_job_bytes() -> None:
    options = pb.PostprocessOptions()
    options.loudness.enabled = True
    options.qc.max_black_fraction = 0.2
    parsed = parse_options(options.SerializeToString())
    plan = build_plan(parsed)
    assert plan.loudness == LoudnessPlan(-14.0, -1.0, 11.0)
    assert plan.qc.max_black_fraction == 0.2 and plan.qc.max_frozen_fraction == 1.0
    assert build_plan(parse_options(b"")) == FinishPlan()
    with pytest.raises(MediaError) as caught:
        parse_options(b"\xff\xff\xff")
    assert caught.value.code == "invalid_input"


def _options(**fields: object) -> pb.PostprocessOptions:
    options = pb.PostprocessOptions()
    for path, value in fields.items():
        target: object = options
        *parents, leaf = path.split("__")
        for name in parents:
            target = getattr(target, name)
        setattr(target, leaf, value)
    return options


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"narration__words_per_minute": 20}, "words_per_minute"),
        ({"narration__language": "english"}, "ISO 639-2"),
        ({"subtitles__max_chars_per_line": 5}, "max_chars_per_line"),
        ({"music__volume_db": -3.0}, "content URI"),
        ({"loudness__enabled": True, "loudness__integrated_lufs": 3.0}, "integrated_lufs"),
        ({"loudness__enabled": True, "loudness__true_peak_dbtp": 2.0}, "true_peak_dbtp"),
        ({"watermark__enabled": True, "watermark__text": "x" * 65}, "watermark text"),
        ({"thumbnails__sprite_tile_width": 33}, "sprite_tile_width"),
        ({"qc__max_black_fraction": 1.5}, "max_black_fraction"),
        ({"qc__freeze_noise_db": 5.0}, "freeze_noise_db"),
    ],
)
def test_bad_options_are_invalid_input(fields: dict[str, object], message: str) -> None:
    with pytest.raises(MediaError) as caught:
        build_plan(_options(**fields), "Narrated.", "en-us")
    assert caught.value.code == "invalid_input"
    assert message in caught.value.message


def test_bad_segments_renditions_and_styles_are_invalid_input() -> None:
    cases = []
    missing = pb.PostprocessOptions()
    missing.narration.segments.add(start_seconds=0, text="Hello.")
    missing.subtitles.languages.extend(["eng", "rus"])
    cases.append((missing, "translation"))
    negative = pb.PostprocessOptions()
    negative.narration.segments.add(start_seconds=-1, text="Hello.")
    cases.append((negative, "start >= 0"))
    odd = pb.PostprocessOptions()
    odd.renditions.add(name="odd", width=721, height=1280)
    cases.append((odd, "even"))
    twice = pb.PostprocessOptions()
    twice.renditions.add(name="a", width=720, height=1280)
    twice.renditions.add(name="a", width=720, height=720)
    cases.append((twice, "unique"))
    many = pb.PostprocessOptions()
    many.subtitles.languages.extend(["eng", "deu", "fra", "spa", "ita", "por", "rus", "zho", "jpn"])
    cases.append((many, "at most 8 subtitle languages"))
    huge = pb.PostprocessOptions()
    huge.narration.segments.add(start_seconds=0, text="Hello.", translations={"deu": "x" * 2001})
    cases.append((huge, "translations"))
    colour = pb.PostprocessOptions()
    colour.subtitles.burn_in.style.color = "red;"
    cases.append((colour, "RRGGBB"))
    burn = pb.PostprocessOptions()
    burn.subtitles.burn_in.language = "deu"
    cases.append((burn, "burn-in language"))
    for options, message in cases:
        with pytest.raises(MediaError) as caught:
            build_plan(options, "Hello.", "en-us")
        assert caught.value.code == "invalid_input" and message in caught.value.message, message


def test_qc_thresholds_take_the_partner_names_and_are_echoed() -> None:
    options = _options(qc__max_black_seconds=1.5, qc__av_sync_tolerance_ms=80.0, qc__loudness_tolerance_lu=0.5,
                       qc__max_silence_seconds=0.0)  # fmt: skip
    plan = build_plan(options).qc
    assert (plan.max_black_s, plan.max_av_offset_s, plan.loudness_tolerance_lu) == (1.5, pytest.approx(0.08), 0.5)
    assert plan.max_silence_s == 0.0 and plan.max_frozen_s is None and plan.max_black_fraction == 0.5
    echoed = plan.thresholds()
    assert (echoed["max_black_seconds"], echoed["av_sync_tolerance_ms"]) == (1.5, 80)
    assert echoed["max_frozen_seconds"] is None
    assert echoed["enforce"] is True and set(echoed) == {"enforce", *QC_FIELDS}
    assert build_plan(_options(qc__disabled=True)).qc.thresholds()["enforce"] is False


@pytest.mark.parametrize(
    ("name", "value"),
    [("max_black_seconds", -0.5), ("max_frozen_seconds", float("nan")), ("av_sync_tolerance_ms", 6000.0),
     ("loudness_tolerance_lu", 0.0), ("max_silence_fraction", 1.5), ("silence_noise_db", 3.0)],
)  # fmt: skip
def test_bad_qc_thresholds_name_their_field(name: str, value: float) -> None:
    with pytest.raises(InvalidOptions) as caught:
        build_plan(_options(**{f"qc__{name}": value}))
    assert caught.value.code == "invalid_input" and caught.value.field == f"qc.{name}"
    assert "must be between" in caught.value.message


def test_watermark_follows_the_free_tier_unless_disabled() -> None:
    assert build_plan(pb.PostprocessOptions()).watermark is None
    forced = build_plan(pb.PostprocessOptions(), free_tier=True).watermark
    assert forced is not None and forced.text == "Made with Reelforge"
    off = pb.PostprocessOptions()
    off.watermark.disabled = True
    assert build_plan(off, free_tier=True).watermark is None
    custom = _options(watermark__enabled=True, watermark__text="  Acme   trial ", watermark__opacity=0.3)
    assert build_plan(custom).watermark == type(forced)("Acme trial", 0.3)


# --- subtitles and thumbnails formats ---------------------------------------------------------


def test_segment_cues_cover_exactly_the_spoken_interval() -> None:
    cues = segment_cues("Meet AquaPure. Clean water, straight from your tap.", 4.5, 3.2)
    assert cues[0].start_s == 4.5 and cues[-1].end_s == pytest.approx(7.7)
    assert [c.text for c in cues] == ["Meet AquaPure.", "Clean water, straight from your tap."]
    chinese = segment_cues("你好\uff0c世界。水很干净。", 1.0, 2.0, max_chars=10)
    assert [c.text for c in chinese] == ["你好\uff0c世界。", "水很干净。"]


def test_safe_margins_keep_vertical_captions_clear_of_the_app_ui() -> None:
    assert safe_margins(720, 1280, 0, 0, 0) == (43, 256, 154)  # 9:16: 6% sides, 20% bottom, 12% top
    assert safe_margins(1280, 720, 0, 0, 0) == (64, 58, 58)
    assert safe_margins(720, 720, 0.1, 0.1, 0.1) == (72, 72, 72)


def test_ass_script_is_drawn_at_the_frame_size_with_the_style() -> None:
    style = SubtitleStyle(font="DejaVu Sans", size_fraction=0.06, color="FFCC00", position="top")
    script = to_ass([Cue(0.5, 1.25, "Hi {\\b1}there")], 720, 1280, style)
    assert "PlayResX: 720\nPlayResY: 1280" in script
    style_line = next(line for line in script.splitlines() if line.startswith("Style: "))
    fields = style_line.removeprefix("Style: ").split(",")
    assert fields[1:4] == ["DejaVu Sans", "43", "&H0000CCFF"]  # 6% of 720; ASS colours are BGR
    assert fields[18:22] == ["8", "43", "43", "154"]  # top centre, side margins, top margin
    assert "Dialogue: 0,0:00:00.50,0:00:01.25,Default,,0,0,0,,Hi (\u2216b1)there" in script


def test_sprite_layout_and_webvtt_thumbnails() -> None:
    plan = build_plan(_options(thumbnails__sprite=True, thumbnails__sprite_interval_seconds=2.0)).thumbnails
    layout = sprite_layout(5.0, 1280, 720, plan)
    assert (layout.columns, layout.rows, layout.tile_width, layout.tile_height) == (3, 1, 160, 90)
    assert [(t.start_s, t.end_s, t.x) for t in layout.tiles] == [(0, 2, 0), (2, 4, 160), (4, 5, 320)]
    assert thumbnails_vtt(layout, "cas://sha256/ab.jpg") == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:02.000\ncas://sha256/ab.jpg#xywh=0,0,160,90\n\n"
        "00:00:02.000 --> 00:00:04.000\ncas://sha256/ab.jpg#xywh=160,0,160,90\n\n"
        "00:00:04.000 --> 00:00:05.000\ncas://sha256/ab.jpg#xywh=320,0,160,90\n"
    )
    long = sprite_layout(600.0, 720, 1280, plan)
    assert len(long.tiles) == 200 and (long.columns, long.rows) == (10, 20)


# --- loudness and QC (pure) -------------------------------------------------------------------

EBUR128_TAIL = """[Parsed_ebur128_0 @ 0x5] Summary:

  Integrated loudness:
    I:         -20.5 LUFS
    Threshold: -31.0 LUFS

  Loudness range:
    LRA:         4.2 LU
    Threshold: -41.0 LUFS
    LRA low:   -23.1 LUFS
    LRA high:  -18.9 LUFS

  True peak:
    Peak:       -3.4 dBFS
"""


def test_loudness_gain_and_limiter() -> None:
    measured = audio.parse_ebur128("noise\n" + EBUR128_TAIL)
    assert (measured.integrated_lufs, measured.true_peak_dbtp) == (-20.5, -3.4)
    plan = LoudnessPlan()
    steps = loudness.chain(plan, measured)
    # -3.4 + 6.5 would peak at +3.1 dBTP: a limiter at the -1.7 dBFS ceiling (-1 dBTP less the margin)
    assert steps == [("volume", "6.500dB"), ("alimiter", "limit=0.8222:level=false:attack=5:release=50")]
    assert loudness.chain(plan, measured, 1.25)[0] == ("volume", "7.750dB")
    assert not loudness.limited(loudness.chain(plan, audio.LoudnessMeasure(-20.5, -12.0)))
    with pytest.raises(MediaError) as caught:
        audio.parse_ebur128(EBUR128_TAIL.replace("-20.5 LUFS", "-inf LUFS"))
    assert caught.value.code == "media_silent"


def test_the_gain_correction_follows_the_secant() -> None:
    assert loudness.next_correction([(0.0, -15.2)], -14.0) == pytest.approx(1.2)
    # 1.2 dB more gave only 0.8 LU more: the secant asks for 0.4 LU more at 1.5 dB per LU
    assert loudness.next_correction([(0.0, -15.2), (1.2, -14.4)], -14.0) == pytest.approx(1.8)
    assert loudness.next_correction([(0.0, -15.2), (1.2, -15.2)], -14.0) == pytest.approx(2.4)  # flat: step on


def test_analysis_parsing_pairs_open_intervals_with_the_end() -> None:
    stderr = (
        "[blackdetect @ 0x1] black_start:0 black_end:1.5 black_duration:1.5\n"
        "[freezedetect @ 0x2] lavfi.freezedetect.freeze_start: 2.5\n"
        "[freezedetect @ 0x2] lavfi.freezedetect.freeze_duration: 1\n"
        "[freezedetect @ 0x2] lavfi.freezedetect.freeze_end: 3.5\n"
        "[freezedetect @ 0x2] lavfi.freezedetect.freeze_start: 5\n"
        "[silencedetect @ 0x3] silence_start: -0.01\n"
        "[silencedetect @ 0x3] silence_end: 0.6 | silence_duration: 0.61\n" + EBUR128_TAIL
    )
    found = qc.parse_analysis(stderr, 6.0)
    assert found["black"] == [(0.0, 1.5)]
    assert found["frozen"] == [(2.5, 3.5), (5.0, 6.0)]
    assert found["silence"] == [(0.0, 0.6)]
    assert (found["integrated_lufs"], found["loudness_range_lu"], found["true_peak_dbtp"]) == (-20.5, 4.2, -3.4)


def _measures(**changes: object) -> qc.Measures:
    base: dict[str, object] = {
        "duration_s": 4.0, "size_bytes": 1000, "fps": 24.0, "width": 640, "height": 360,
        "streams": {"video": ["h264"], "audio": ["aac"], "subtitle": ["mov_text"]}, "subtitle_languages": ["eng"],
        "video_start_s": 0.0, "video_duration_s": 4.0, "audio_start_s": 0.0, "audio_duration_s": 4.0,
        "integrated_lufs": -14.3, "true_peak_dbtp": -1.2,
    }  # fmt: skip
    return qc.Measures(**{**base, **changes})  # type: ignore[arg-type]


EXPECT = qc.Expectations(duration_s=4.0, audio=True, subtitle_languages=("eng",), loudness=LoudnessPlan())


def test_a_good_output_passes_every_check() -> None:
    report = qc.judge(_measures(black=[(1.0, 1.2)]), EXPECT, QcPlan(), "main")
    assert report.passed and not report.rerender
    assert {c.name for c in report.checks} == {
        "video_stream", "duration", "audio_stream", "av_sync", "subtitle_tracks", "black", "frozen", "silence",
        "loudness", "true_peak",
    }  # fmt: skip
    assert report.to_dict()["passed"] is True


def test_black_video_fails_and_asks_for_a_rerender() -> None:
    report = qc.judge(_measures(black=[(0.0, 4.0)]), EXPECT, QcPlan(), "main")
    assert not report.passed and report.rerender
    assert [(c.name, c.measured, c.limit) for c in report.failures] == [("black", 1.0, 0.5)]
    assert "main: black 1.0 (limit 0.5)" in qc.summary([report])
    relaxed = qc.judge(_measures(black=[(0.0, 4.0)]), EXPECT, QcPlan(max_black_fraction=1.0), "main")
    assert relaxed.passed
    report_only = qc.judge(_measures(black=[(0.0, 4.0)]), EXPECT, QcPlan(enforce=False), "main")
    assert report_only.passed and not report_only.checks[5].passed


def test_limits_in_seconds_judge_the_total_length_of_the_stretches() -> None:
    measures = _measures(black=[(0.0, 0.5), (2.0, 2.8)], frozen=[(1.0, 2.0)], silence=[(3.0, 4.0)])
    assert "black_seconds" not in {c.name for c in qc.judge(measures, EXPECT, QcPlan(), "main").checks}
    strict = qc.judge(measures, EXPECT, QcPlan(max_black_s=1.0, max_frozen_s=1.0, max_silence_s=0.5), "main")
    assert [(c.name, c.measured, c.limit) for c in strict.failures] == [("black_seconds", 1.3, 1.0),
                                                                        ("silence_seconds", 1.0, 0.5)]  # fmt: skip
    assert strict.rerender  # black is the render's fault; silence alone would not be
    assert not qc.judge(_measures(silence=[(3.0, 4.0)]), EXPECT, QcPlan(max_silence_s=0.5), "main").rerender
    assert qc.judge(measures, EXPECT, QcPlan(max_black_s=1.3, max_frozen_s=1.0), "main").passed


def test_sound_faults_fail_without_a_rerender() -> None:
    cases = {
        "loudness": _measures(integrated_lufs=-16.0),
        "true_peak": _measures(true_peak_dbtp=0.2),
        "av_sync": _measures(audio_duration_s=3.5),
        "subtitle_tracks": _measures(subtitle_languages=["rus"]),
        "audio_stream": _measures(streams={"video": ["h264"], "subtitle": ["mov_text"]}),
        "frozen": _measures(frozen=[(0.0, 3.0)]),
    }
    for name, measures in cases.items():
        plan = QcPlan(max_frozen_fraction=0.5)
        report = qc.judge(measures, EXPECT, plan, "main")
        assert [c.name for c in report.failures] == [name], name
        assert report.rerender is (name == "frozen"), name
