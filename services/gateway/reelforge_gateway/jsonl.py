"""JSON lines (one JSON object per line, as application/jsonl or application/x-ndjson): parsing, no I/O.

Line numbers are physical and 1-based, so a partner can find a reported line in the file they sent.
Blank lines are skipped; a trailing newline is optional; CRLF is accepted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Line:
    number: int
    value: dict[str, Any]


@dataclass(frozen=True)
class LineError:
    line: int
    code: str
    message: str


class TooManyLines(ValueError):
    pass


class NotUtf8(ValueError):
    pass


def parse(data: bytes, max_lines: int) -> tuple[list[Line], list[LineError]]:
    """Every object line, and an error for every line that is not a JSON object.

    Raises TooManyLines when more than `max_lines` non-blank lines are found (without parsing them all)
    and NotUtf8 for bytes that are not UTF-8.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotUtf8(f"the upload is not UTF-8 (byte {exc.start})") from None
    lines: list[Line] = []
    errors: list[LineError] = []
    count = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        raw = raw.strip()
        if not raw:
            continue
        count += 1
        if count > max_lines:
            raise TooManyLines(f"a batch may have at most {max_lines} lines")
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep to parse
            errors.append(LineError(number, "malformed_json", f"not valid JSON: {str(exc)[:200]}"))
            continue
        if not isinstance(value, dict):
            errors.append(LineError(number, "malformed_json", "each line must be a JSON object (a job body)"))
            continue
        lines.append(Line(number, value))
    return lines, errors
