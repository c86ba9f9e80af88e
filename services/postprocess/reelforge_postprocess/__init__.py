"""Postprocess: finishing with FFmpeg (voice-over, subtitles, faststart)."""
