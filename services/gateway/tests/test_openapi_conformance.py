"""A bounded schemathesis run against the gateway's own OpenAPI document: no 5xx, no response that
breaks the documented schema (status codes, content types, bodies), on native and OpenAI routes."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from reelforge_core.content import ContentStore
from reelforge_gateway.api.app import create_app
from services.gateway.tests.conftest import make_settings
from services.gateway.tests.harness import Gateway

# The document is what the running app serves at /openapi.json (the same function builds it).
_SPEC = create_app(None, ContentStore(Path("/tmp/reelforge-openapi-spec")), make_settings()).openapi()  # type: ignore[arg-type]
schema = schemathesis.openapi.from_dict(_SPEC)


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_api_conforms_to_its_schema(case: schemathesis.Case, gateway: Gateway) -> None:
    # Not checked: schema-valid but meaningless input (an unknown cursor, a job id that does not
    # exist) is rightly a 4xx.
    case.call_and_validate(base_url=gateway.url, headers={"Authorization": f"Bearer {gateway.api_key}"},
                           excluded_checks=[positive_data_acceptance])
