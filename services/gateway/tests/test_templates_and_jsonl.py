"""Template rendering and variable validation, job expansion (presets, overrides, variants), JSON-lines parsing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from reelforge_core.content import ContentStore
from reelforge_gateway import jsonl, templates
from reelforge_gateway.api.app import create_app
from reelforge_gateway.api.job_templates import JobRejected, expand
from reelforge_gateway.api.jobs import JobRequest, validate_job
from reelforge_gateway.moderation import Moderator
from reelforge_gateway.settings import GatewaySettings
from reelforge_gateway.templates import Template, TemplateBody


def _template(**body: Any) -> Template:
    return Template("t", TemplateBody.model_validate(body), builtin=False)


TYPED = _template(
    prompt="{{product}} x{{count}} at {{price}} {{style}} sale={{sale}}",
    variables=[{"name": "product"}, {"name": "count", "type": "integer", "default": 2},
               {"name": "price", "type": "number", "required": False},
               {"name": "style", "type": "enum", "choices": ["bold", "calm"], "default": "calm"},
               {"name": "sale", "type": "boolean", "default": False}],
    preset={"seconds": 8.0, "size": "720x1280", "voice": "en-gb"},
)


def test_variables_render_with_defaults_and_types() -> None:
    values = templates.resolve_variables(TYPED, {"product": "A lamp", "price": 9.5, "sale": True})
    assert values == {"product": "A lamp", "count": 2, "price": 9.5, "style": "calm", "sale": True}
    assert templates.fill(TYPED.body.prompt, values) == "A lamp x2 at 9.5 calm sale=yes"
    assert templates.fill("{{ n }}", {"n": 3.0}) == "3"


@pytest.mark.parametrize(("given", "field", "kind"), [
    ({}, "variables.product", "missing_variable"),
    ({"product": "x", "count": "2"}, "variables.count", "invalid_variable"),
    ({"product": "x", "count": True}, "variables.count", "invalid_variable"),
    ({"product": "x", "count": 1.5}, "variables.count", "invalid_variable"),
    ({"product": "x", "price": "cheap"}, "variables.price", "invalid_variable"),
    ({"product": "x", "price": float("nan")}, "variables.price", "invalid_variable"),
    ({"product": "x", "style": "loud"}, "variables.style", "invalid_variable"),
    ({"product": "x", "sale": 1}, "variables.sale", "invalid_variable"),
    ({"product": 5}, "variables.product", "invalid_variable"),
    ({"product": "x" * 201}, "variables.product", "invalid_variable"),
    ({"product": "bad\x00"}, "variables.product", "invalid_variable"),
    ({"product": "x", "colour": "red"}, "variables.colour", "unknown_variable"),
])
def test_bad_variables_are_named(given: dict[str, Any], field: str, kind: str) -> None:
    with pytest.raises(templates.TemplateVariablesInvalid) as caught:
        templates.resolve_variables(TYPED, given)
    assert [(e.field, e.type) for e in caught.value.errors] == [(field, kind)]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(templates.TemplateVariablesInvalid) as caught:
        templates.resolve_variables(TYPED, {"count": "x", "nope": 1})
    assert {e.field for e in caught.value.errors} == {"variables.count", "variables.product", "variables.nope"}


@pytest.mark.parametrize(("body", "message"), [
    ({"prompt": "{{undeclared}}"}, "not a declared variable"),
    ({"prompt": "x", "variables": [{"name": "a"}, {"name": "a"}]}, "unique"),
    ({"prompt": "x", "variables": [{"name": "a", "type": "enum"}]}, "needs choices"),
    ({"prompt": "x", "variables": [{"name": "a", "choices": ["b"]}]}, "only an enum"),
    ({"prompt": "x", "variables": [{"name": "a", "type": "integer", "default": "1"}]}, "must be an integer"),
    ({"prompt": "x", "variables": [{"name": "a", "type": "enum", "choices": ["b"], "default": "c"}]}, "one of b"),
    ({"prompt": "x", "preset": {"prompt": "y"}}, "may not set prompt"),
    ({"prompt": "x", "preset": {"seed": 1}}, "may not set seed"),
    ({"prompt": "x\x00"}, "NUL"),
    ({"prompt": "x", "variables": [{"name": "1a"}]}, "pattern"),
    ({"prompt": "x", "surprise": 1}, "Extra inputs"),
])
def test_bad_templates_are_refused(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TemplateBody.model_validate(body)


@pytest.mark.parametrize("name", sorted(templates.BUILTINS))
def test_builtins_render_valid_jobs(name: str) -> None:
    template = templates.BUILTINS[name]
    required = {v.name: "a water purifier" for v in template.body.variables if v.required and v.default is None}
    jobs = expand(JobRequest.model_validate({"template": name, "variables": required, "variants": 3}),
                  template, Moderator([]))
    assert len(jobs) == 3 and {job.variant for job in jobs} == {0, 1, 2}
    assert all("{{" not in job.spec.prompt for job in jobs)
    assert len({job.spec.seed for job in jobs}) == 3
    for field, value in template.body.preset.items():
        given = [getattr(job.spec, field) for job in jobs]
        assert all((g.model_dump(exclude_unset=True) if field == "postprocess" else g) == value for g in given)
    if template.body.variations:
        assert len({job.spec.prompt for job in jobs}) == 3
    assert set(templates.BUILTINS) == {"product-ad", "ecommerce-listing-9x16", "ecommerce-listing-1x1", "explainer"}


def test_explicit_fields_override_the_preset_and_variants_get_consecutive_seeds() -> None:
    request = JobRequest.model_validate({"template": "t", "variables": {"product": "A lamp"}, "variants": 2,
                                         "size": "1280x720", "seed": 100, "metadata": {"sku": "L1"}})
    jobs = expand(request, TYPED, Moderator([]))
    assert [job.spec.seed for job in jobs] == [100, 101]
    assert all(job.spec.size == "1280x720" and job.spec.seconds == 8.0 and job.spec.voice == "en-gb"
               and job.spec.metadata == {"sku": "L1"} and job.template == "t" for job in jobs)
    single = expand(JobRequest.model_validate({"template": "t", "variables": {"product": "A lamp"},
                                               "prompt": "my own words"}), TYPED, Moderator([]))
    assert single[0].spec.prompt == "my own words" and single[0].spec.seed is None


def test_a_jobs_postprocess_merges_into_the_templates_part_by_part() -> None:
    finish = {"qc": {"max_black_seconds": 2.0, "max_frozen_fraction": 0.5}, "loudness": {"integrated_lufs": -16.0},
              "renditions": [{"width": 720, "height": 720}]}  # fmt: skip
    template = _template(prompt="{{product}}", variables=[{"name": "product"}],
                         preset={"seconds": 6.0, "postprocess": finish})  # fmt: skip
    own = {"qc": {"max_black_seconds": 0.5, "av_sync_tolerance_ms": 100}, "renditions": [], "loudness": None}
    [job] = expand(JobRequest.model_validate({"template": "t", "variables": {"product": "A lamp"},
                                              "postprocess": own}), template, Moderator([]))  # fmt: skip
    assert job.spec.postprocess is not None
    assert job.spec.postprocess.model_dump(exclude_unset=True) == {
        "qc": {"max_black_seconds": 0.5, "max_frozen_fraction": 0.5, "av_sync_tolerance_ms": 100},
        "loudness": None, "renditions": []}  # fmt: skip
    [plain] = expand(JobRequest.model_validate({"template": "t", "variables": {"product": "A lamp"}}), template,
                     Moderator([]))  # fmt: skip
    assert plain.spec.postprocess is not None and plain.spec.postprocess.model_dump(exclude_unset=True) == finish
    assert templates.merged({"a": {"b": 1}}, {"a": None}) == {"a": None}


def _rejected(body: dict[str, Any], template: Template | None = TYPED, blocked: list[str] | None = None) -> JobRejected:
    with pytest.raises(JobRejected) as caught:
        expand(JobRequest.model_validate(body), template, Moderator(blocked or []))
    return caught.value


def test_expansion_errors_have_codes_and_fields() -> None:
    assert _rejected({"template": "nope"}, None).code == "template_not_found"
    assert _rejected({"prompt": "x", "seconds": 4, "variables": {"a": 1}}, None).errors[0]["field"] == "variables"
    bad_vars = _rejected({"template": "t", "variables": {"count": "x"}})
    assert bad_vars.code == "invalid_template_variables"
    assert {e["field"] for e in bad_vars.errors} == {"variables.count", "variables.product"}
    bad_field = _rejected({"template": "t", "variables": {"product": "x"}, "seconds": 999})
    assert (bad_field.code, bad_field.errors[0]["field"]) == ("invalid_request", "seconds")
    blocked = _rejected({"template": "t", "variables": {"product": "contraband"}}, blocked=["contraband"])
    assert blocked.code == "prompt_blocked"
    with pytest.raises(ValidationError):
        JobRequest.model_validate({"template": "t", "variants": 9})
    with pytest.raises(ValidationError):
        JobRequest.model_validate({"template": "t", "variants": "2"})


def test_validate_job_is_create_jobs_validation() -> None:
    assert validate_job({"prompt": " A toy ", "seconds": 4}).prompt == "A toy"
    with pytest.raises(RequestValidationError) as caught:
        validate_job({"prompt": "x", "seconds": "4", "surprise": 1})
    assert {tuple(e["loc"]) for e in caught.value.errors()} == {("seconds",), ("surprise",)}


def test_jsonl_lines_are_numbered_as_sent() -> None:
    data = b'{"prompt": "a", "seconds": 4}\r\n\n  \n[1, 2]\n{"prompt": "b"\n"text"\n{"prompt": "c", "seconds": 4}'
    lines, errors = jsonl.parse(data, 10)
    assert [(line.number, line.value.get("prompt")) for line in lines] == [(1, "a"), (7, "c")]
    assert [(e.line, e.code) for e in errors] == [(4, "malformed_json"), (5, "malformed_json"), (6, "malformed_json")]
    assert jsonl.parse(b"\xef\xbb\xbf" + b'{"a": 1}\n', 1)[0][0].value == {"a": 1}  # a BOM is tolerated


def test_jsonl_limits_and_encoding() -> None:
    with pytest.raises(jsonl.TooManyLines):
        jsonl.parse(b"{}\n" * 4, 3)
    assert len(jsonl.parse(b"{}\n" * 3 + b"\n\n", 3)[0]) == 3
    with pytest.raises(jsonl.NotUtf8):
        jsonl.parse(b'{"prompt": "\xff"}', 10)
    assert jsonl.parse(b"", 10) == ([], [])
    deep = jsonl.parse(b"[" * 100_000 + b"\n{}", 10)
    assert [e.line for e in deep[1]] == [1] and len(deep[0]) == 1


def test_openapi_documents_batches_templates_and_the_job_request(tmp_path: Path) -> None:
    schema = create_app(None, ContentStore(tmp_path), GatewaySettings()).openapi()  # type: ignore[arg-type]
    paths = schema["paths"]
    routes = {("post", "/v1/batches"), ("get", "/v1/batches"), ("get", "/v1/batches/{batch_id}"),
              ("post", "/v1/batches/{batch_id}/cancel"), ("get", "/v1/batches/{batch_id}/results"),
              ("get", "/v1/templates"), ("post", "/v1/templates"), ("get", "/v1/templates/{name}"),
              ("patch", "/v1/templates/{name}"), ("delete", "/v1/templates/{name}")}
    for method, path in routes:
        responses = paths[path][method]["responses"]
        problem = responses["422"]["content"]["application/problem+json"]["schema"]
        assert problem == {"$ref": "#/components/schemas/ProblemDetails"}, (method, path)
    upload = paths["/v1/batches"]["post"]["requestBody"]["content"]
    assert {"application/jsonl", "application/x-ndjson", "multipart/form-data"} <= set(upload)
    components = schema["components"]["schemas"]
    request = components["JobRequest"]
    assert {"prompt", "seconds", "size", "template", "variables", "variants"} <= set(request["properties"])
    assert request["additionalProperties"] is False
    assert "ResultLine" in components and "ProblemDetails" in components
    created = paths["/v1/jobs"]["post"]["responses"]["202"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/JobGroup"} in created["anyOf"]
    assert components["JobGroup"]["properties"]["data"]["items"] == {"$ref": "#/components/schemas/JobView"}
