"""Probing and stream-copy muxing in process, with FFmpeg's own libraries (PyAV).

Starting the ffmpeg or ffprobe program costs about 100 ms of CPU here (it links 200+ shared
libraries): more than copying every packet of a 12 s clip. So the steps that only read headers or
copy packets run in process: probing the input and the outputs, and the final mux (video
stream-copied, the finished AAC sound stream-copied, one mov_text track per language written from
the cues, fast start). Anything that decodes, filters or encodes still runs the ffmpeg program.

Blocking calls: run them in a thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
from av.container import InputContainer
from av.packet import Packet
from av.stream import Stream

from reelforge_core.content import raise_if_no_space
from reelforge_core.media import MediaError, ProbeResult, StreamInfo
from reelforge_postprocess.subtitles import Cue

MS = Fraction(1, 1000)
# The mov_text encoder wants an ASS header to open and takes its default style from it: this is
# the header ffmpeg itself uses when it converts SRT (players then show plain text, their own font).
_MOV_TEXT_HEADER = (
    b"[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
    b"Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, "
    b"Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, "
    b"MarginR, MarginV, Encoding\n"
    b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n"
    b"[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)


@dataclass(frozen=True)
class SubtitleTrack:
    language: str  # ISO 639-2
    cues: Sequence[Cue]


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    return float(value * time_base) if value is not None and time_base is not None else None


def _stream_info(stream: Stream) -> StreamInfo:
    context = stream.codec_context
    kind = stream.type
    rate = getattr(stream, "average_rate", None) if kind == "video" else None
    layout = getattr(context, "layout", None) if kind == "audio" else None
    return StreamInfo(
        index=stream.index,
        codec_type=kind,
        codec_name=context.name if context is not None else "unknown",
        width=getattr(context, "width", None) if kind == "video" else None,
        height=getattr(context, "height", None) if kind == "video" else None,
        fps=float(rate) if rate else None,
        duration_s=_seconds(stream.duration, stream.time_base),
        sample_rate=getattr(context, "sample_rate", None) if kind == "audio" else None,
        channels=layout.nb_channels if layout is not None else None,
        attached_pic=bool(stream.disposition & av.stream.Disposition.attached_pic),
        tags=dict(stream.metadata),
        start_s=_seconds(stream.start_time, stream.time_base),
    )


def probe(path: Path) -> ProbeResult:
    """What ffprobe would say (reelforge_core.media.probe's ProbeResult), without starting it."""
    try:
        with av.open(str(path)) as container:
            streams = tuple(_stream_info(s) for s in container.streams)
            duration = container.duration / av.time_base if container.duration is not None else None
            format_name = container.format.name
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError("media_unreadable", f"cannot read {path.name}: {exc}") from exc
    if not streams:
        raise MediaError("media_unreadable", f"{path.name} contains no media streams")
    if duration is None:
        duration = max((s.duration_s for s in streams if s.duration_s is not None), default=0.0)
    return ProbeResult(duration, format_name, streams, path.stat().st_size)


def _packets(container: InputContainer, stream: Stream, into: Stream) -> Iterator[tuple[float, int, Packet[Stream]]]:
    for packet in container.demux(stream):
        if packet.dts is None:  # the demuxer's end-of-stream marker
            continue
        packet.stream = into
        yield float(packet.dts * packet.time_base), into.index, packet


def _mov_text(track: SubtitleTrack, into: Stream) -> Iterator[tuple[float, int, Packet[Stream]]]:
    for cue in track.cues:
        text = cue.text.encode("utf-8")
        packet = Packet(struct.pack(">H", len(text)) + text)  # a tx3g sample: length, then UTF-8
        packet.stream, packet.time_base = into, MS
        packet.pts = packet.dts = round(cue.start_s * 1000)
        packet.duration = max(1, round((cue.end_s - cue.start_s) * 1000))
        yield cue.start_s, into.index, packet


def mux(
    out: Path,
    video: Path,
    audio: Path | None,
    subtitles: Sequence[SubtitleTrack] = (),
    audio_language: str | None = None,
) -> None:
    """`out` (MP4, fast start): the first video stream of `video` and the first audio stream of
    `audio` (which may be `video` itself), both stream-copied, and a mov_text track per language."""
    try:
        with ExitStack() as stack:
            pictures = stack.enter_context(av.open(str(video)))
            output = stack.enter_context(av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}))
            if not pictures.streams.video:
                raise MediaError("media_unreadable", f"{video.name} has no video stream")
            sources: list[Iterator[tuple[float, int, Packet[Stream]]]] = []
            video_in = pictures.streams.video[0]
            video_out = output.add_stream_from_template(video_in)
            sources.append(_packets(pictures, video_in, video_out))
            if audio is not None:
                sound = stack.enter_context(av.open(str(audio)))
                if not sound.streams.audio:
                    raise MediaError("media_unreadable", f"{audio.name} has no audio stream")
                audio_in = sound.streams.audio[0]
                audio_out = output.add_stream_from_template(audio_in)
                if audio_language:
                    audio_out.metadata["language"] = audio_language
                sources.append(_packets(sound, audio_in, audio_out))
            for track in subtitles:
                text_out = output.add_stream("mov_text")
                text_out.time_base = MS
                text_out.codec_context.subtitle_header = _MOV_TEXT_HEADER
                text_out.metadata["language"] = track.language
                sources.append(_mov_text(track, text_out))
            for _, _, packet in heapq.merge(*sources, key=lambda item: (item[0], item[1])):
                output.mux(packet)
    except (av.error.FFmpegError, OSError) as exc:
        raise_if_no_space(exc)
        raise MediaError("media_tool_failed", f"muxing {out.name} failed: {exc}") from exc
