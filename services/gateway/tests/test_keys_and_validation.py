from __future__ import annotations

import pytest

from reelforge_gateway import keys, validation


def test_generated_key_matches_only_itself() -> None:
    key = keys.generate()
    assert key.plaintext.startswith(f"rfk_{key.prefix}_")
    assert keys.prefix_of(key.plaintext) == key.prefix
    assert keys.matches(key.plaintext, key.digest)
    assert not keys.matches(key.plaintext + "x", key.digest)
    assert key.plaintext not in key.digest


def test_keys_are_unique() -> None:
    assert len({keys.generate().plaintext for _ in range(100)}) == 100


@pytest.mark.parametrize("text", ["", "rfk_", "rfk_short_abc", "Bearer rfk_0123456789_" + "a" * 43, "x" * 500])
def test_malformed_keys_have_no_prefix(text: str) -> None:
    assert keys.prefix_of(text) is None


def test_sizes() -> None:
    assert validation.parse_size("1280x720") == (1280, 720)
    assert validation.parse_size("1080x1920") == (1080, 1920)
    with pytest.raises(ValueError, match="size must be one of"):
        validation.parse_size("1281x720")
