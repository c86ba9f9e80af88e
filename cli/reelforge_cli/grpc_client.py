"""Where the operators' gRPC APIs are (orchestrator admin, billing) and readable errors from them.

Targets and the operator token come from a flag, then an environment variable, then the platform
`reelforge up` runs (its stack.json). Any call goes through `call`, which turns a gRPC status into one sentence.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import grpc

from reelforge_cli.client import NotConfigured, state_file

T = TypeVar("T")
TIMEOUT_SECONDS = 10.0


class CallFailed(Exception):
    pass


@dataclass(frozen=True)
class Api:
    """One gRPC API: what to call it in messages, its flag, env variable and stack.json key."""

    name: str
    env: str
    state_key: str


ADMIN = Api("orchestrator admin API", "REELFORGE_ADMIN_TARGET", "admin_target")
BILLING = Api("billing API", "REELFORGE_BILLING_TARGET", "billing_target")


def _state() -> dict[str, str]:
    if not state_file().exists():
        return {}
    state: dict[str, str] = json.loads(state_file().read_text())
    return state


def resolve(api: Api, target: str | None) -> str:
    target = target or os.environ.get(api.env) or _state().get(api.state_key)
    if not target:
        raise NotConfigured(
            f"no {api.name} to talk to: start the platform with `reelforge up`, or set {api.env} (host:port)"
        )
    return target


def operator_metadata(token: str | None = None) -> tuple[tuple[str, str], ...]:
    """The operator token (`--token`, REELFORGE_OPERATOR_TOKEN or `reelforge up`'s) as call metadata, if known."""
    token = token or os.environ.get("REELFORGE_OPERATOR_TOKEN") or _state().get("operator_token")
    return (("authorization", f"Bearer {token}"),) if token else ()


@contextmanager
def open_channel(target: str) -> Iterator[grpc.Channel]:
    channel = grpc.insecure_channel(target)
    try:
        yield channel
    finally:
        channel.close()


def call(api: Api, target: str, method: Callable[..., T], request: object, token: str | None = None) -> T:
    """Calls `method(request)` with a deadline and the operator token; raises CallFailed with a sentence."""
    try:
        return method(request, timeout=TIMEOUT_SECONDS, metadata=operator_metadata(token))
    except grpc.RpcError as exc:
        raise CallFailed(_explain(api, target, exc)) from None


def _explain(api: Api, target: str, exc: grpc.RpcError) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach the {api.name} at {target}: is the platform running? (`reelforge up`)"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the {api.name} at {target} did not answer within {TIMEOUT_SECONDS:.0f} s"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return (f"the {api.name} at {target} refused the call: {details}. Pass --token, set "
                "REELFORGE_OPERATOR_TOKEN, or run against the platform `reelforge up` started (it knows the token)")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return f"the {api.name} at {target} does not offer this call (an older version?)"
    return f"{details} ({code.name.lower()})"
