"""Builds configured providers: `kind` names a module in this package that exposes
`create(name: str, config: ProviderConfig) -> Provider`. Adding a provider is adding that module."""

from __future__ import annotations

import importlib
import re

from reelforge_render.providers.base import Provider
from reelforge_render.providers.config import ProviderConfig

_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


class UnknownProviderKind(Exception):
    pass


def create_provider(name: str, config: ProviderConfig) -> Provider:
    if not _KIND.match(config.kind) or config.kind in ("base", "config", "http", "registry"):
        raise UnknownProviderKind(f"provider {name!r}: invalid kind {config.kind!r}")
    try:
        module = importlib.import_module(f"reelforge_render.providers.{config.kind}")
    except ModuleNotFoundError as exc:
        raise UnknownProviderKind(f"provider {name!r}: no module for kind {config.kind!r}") from exc
    provider: Provider = module.create(name, config)
    return provider
