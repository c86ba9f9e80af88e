"""Schemathesis against the gateway's own OpenAPI document, with a valid and with a forged key: no 5xx, no
response that breaks the documented schema (status codes, content types, bodies), and every error is RFC 9457
problem+json on the native routes or OpenAI's error object on the OpenAI-compatible ones.

CI runs a bounded number of examples per operation; the full run is opt-in:
    REELFORGE_SCHEMATHESIS_EXAMPLES=60 ./run test services/gateway/tests/test_openapi_conformance.py -q -s
(about 10,000 requests: 50 operations x 60 fuzzed examples plus the coverage cases, each with both keys; the
count is printed at the end.)"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import positive_data_acceptance

from reelforge_core.content import ContentStore
from reelforge_gateway.api.app import create_app
from reelforge_gateway.api.problems import PROBLEM_JSON, is_openai_path
from services.gateway.tests.conftest import make_settings
from services.gateway.tests.harness import Gateway

# The document is what the running app serves at /openapi.json (the same function builds it).
_SPEC = create_app(None, ContentStore(Path("/tmp/reelforge-openapi-spec")), make_settings()).openapi()  # type: ignore[arg-type]
schema = schemathesis.openapi.from_dict(_SPEC)
# Fuzzed examples per operation (schemathesis adds its schema-example and coverage cases). The full run sends
# every case with both keys; CI's bounded run every 8th case with the forged key, to keep its time flat.
FULL_RUN = os.environ.get("REELFORGE_SCHEMATHESIS_EXAMPLES")
EXAMPLES = int(FULL_RUN) if FULL_RUN else 6
FORGED_EVERY = 1 if FULL_RUN else 8
FORGED_KEY = "rfk_" + "A" * 43  # the real prefix and length, a secret that was never issued

_seen: Counter[str] = Counter()  # responses by status class, over the module


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\nschemathesis: {sum(_seen.values())} requests (at most {EXAMPLES} examples per operation, "
          f"with a forged key every {FORGED_EVERY} cases): " + ", ".join(f"{k} {v}" for k, v in sorted(_seen.items())))


def check_error_shape(path: str, response: Response) -> None:
    """Every error says what went wrong in the shape its API promises."""
    if response.status_code < 400:
        return
    content_type = (response.headers.get("content-type") or [""])[0]
    body = json.loads(response.content)
    if is_openai_path(path):
        assert content_type.startswith("application/json"), (path, response.status_code, content_type)
        error = body["error"]
        assert isinstance(error["message"], str) and error["message"], body
        assert isinstance(error["type"], str) and isinstance(error["code"], str), body
    else:
        assert content_type.startswith(PROBLEM_JSON), (path, response.status_code, content_type)
        assert body["status"] == response.status_code, body
        assert isinstance(body["code"], str) and body["code"], body
        assert isinstance(body["title"], str) and isinstance(body["type"], str), body


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_api_conforms_to_its_schema(case: schemathesis.Case, gateway: Gateway) -> None:
    call_and_check(case, gateway.url, gateway.api_key)
    if sum(_seen.values()) % FORGED_EVERY == 0:
        call_and_check(case, gateway.url, FORGED_KEY)


def call_and_check(case: schemathesis.Case, base_url: str, secret: str) -> None:
    response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {secret}"})
    _seen[f"{response.status_code // 100}xx"] += 1
    if sum(_seen.values()) % 500 == 0:
        print(f"\nschemathesis: {sum(_seen.values())} requests so far: {dict(_seen)}", flush=True)
    # Not checked: schema-valid but meaningless input (an unknown cursor, a job id that does not
    # exist) is rightly a 4xx.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
    check_error_shape(case.path, response)
