"""Prompt templates: typed variables, rendering, parameter presets, and the built-in catalogue (no I/O).

A template's `prompt` (and optional `narration`) holds `{{name}}` placeholders, each a declared
variable. A variable is a string, integer, number, boolean or enum, and either required or given
a default. A preset holds job fields (model, seconds, size, voice, the postprocess options, ...)
that a job naming the template gets unless it sets them itself. `variations` are prompt suffixes
that make the variants of a multi-variant request differ beyond their seeds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
MAX_VARIABLES = 32
MAX_STRING_VALUE_CHARS = 1000
MAX_VARIANTS = 8
# Preset fields a template may not fix: its own texts provide them, and metadata is the partner's.
UNPRESETTABLE = frozenset({"prompt", "narration", "metadata", "seed"})

VariableType = Literal["string", "integer", "number", "boolean", "enum"]


class Variable(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    type: VariableType = "string"
    description: str | None = Field(default=None, max_length=500)
    required: bool = Field(default=True, description="Ignored when a default is given")
    default: str | int | float | bool | None = None
    choices: list[str] | None = Field(default=None, min_length=1, max_length=100,
                                      description="The allowed values of an enum")
    max_length: int = Field(default=200, ge=1, le=MAX_STRING_VALUE_CHARS, description="For strings")

    @model_validator(mode="after")
    def consistent(self) -> Variable:
        if self.type == "enum" and not self.choices:
            raise ValueError(f"variable {self.name!r}: an enum needs choices")
        if self.type != "enum" and self.choices is not None:
            raise ValueError(f"variable {self.name!r}: only an enum has choices")
        if self.default is not None:
            problem = check_value(self, self.default)
            if problem:
                raise ValueError(f"variable {self.name!r}: the default {problem}")
        return self


class TemplateBody(BaseModel):
    """What defines a template (the built-ins and the tenants' own)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    description: str | None = Field(default=None, max_length=1000)
    prompt: str = Field(min_length=1, max_length=4000, description="Text with {{variable}} placeholders")
    narration: str | None = Field(default=None, max_length=1000, description="Voice-over text, may use variables")
    variables: list[Variable] = Field(default_factory=list, max_length=MAX_VARIABLES)
    preset: dict[str, Any] = Field(default_factory=dict, description="Job fields used unless the job sets them")
    variations: list[str] = Field(default_factory=list, max_length=MAX_VARIANTS,
                                  description="Prompt suffixes; variant i gets variations[i % len]")

    @model_validator(mode="after")
    def placeholders_declared(self) -> TemplateBody:
        names = [variable.name for variable in self.variables]
        if len(set(names)) != len(names):
            raise ValueError("variable names must be unique")
        for text in (self.prompt, self.narration or ""):
            for used in PLACEHOLDER.findall(text):
                if used not in names:
                    raise ValueError(f"the placeholder {{{{{used}}}}} is not a declared variable")
        fixed = UNPRESETTABLE.intersection(self.preset)
        if fixed:
            raise ValueError(f"a preset may not set {', '.join(sorted(fixed))}")
        if "\\u0000" in self.model_dump_json():  # PostgreSQL text and jsonb cannot hold NUL
            raise ValueError("a template must not contain NUL characters")
        return self


@dataclass(frozen=True)
class Template:
    name: str
    body: TemplateBody
    builtin: bool


@dataclass(frozen=True)
class VariableError:
    field: str
    message: str
    type: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message, "type": self.type}


class TemplateVariablesInvalid(ValueError):
    def __init__(self, errors: list[VariableError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


def check_value(variable: Variable, value: Any) -> str | None:
    """Why `value` does not fit the variable, or None. JSON types as documented: no "4" for 4."""
    kind = variable.type
    if kind in ("string", "enum") and not isinstance(value, str):
        return "must be a string"
    if kind == "string" and len(value) > variable.max_length:
        return f"must have at most {variable.max_length} characters"
    if kind == "string" and not value.isprintable():
        return "must be printable text"
    if kind == "enum" and value not in (variable.choices or []):
        return f"must be one of {', '.join(variable.choices or [])}"
    if kind == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        return "must be an integer"
    if kind == "number" and (isinstance(value, bool) or not isinstance(value, int | float)
                             or not math.isfinite(value)):
        return "must be a number"
    if kind == "boolean" and not isinstance(value, bool):
        return "must be true or false"
    return None


def resolve_variables(template: Template, given: dict[str, Any]) -> dict[str, Any]:
    """The value of every variable (given or default); every problem at once, by `variables.<name>`."""
    declared = {variable.name: variable for variable in template.body.variables}
    errors = [VariableError(f"variables.{name}", f"the template {template.name!r} has no variable {name!r}",
                            "unknown_variable") for name in given if name not in declared]
    values: dict[str, Any] = {}
    for name, variable in declared.items():
        if name in given:
            problem = check_value(variable, given[name])
            if problem:
                errors.append(VariableError(f"variables.{name}", problem, "invalid_variable"))
            values[name] = given[name]
        elif variable.default is not None:
            values[name] = variable.default
        elif variable.required:
            errors.append(VariableError(f"variables.{name}", "is required", "missing_variable"))
        else:
            values[name] = ""
    if errors:
        raise TemplateVariablesInvalid(errors)
    return values


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def fill(text: str, values: dict[str, Any]) -> str:
    rendered = PLACEHOLDER.sub(lambda match: _format(values[match.group(1)]), text)
    return " ".join(rendered.split())


# Preset fields whose object a job's own merges into, part by part (a job's postprocess.qc over a
# template's postprocess keeps the template's music and subtitles); other fields are replaced whole.
MERGED_FIELDS = frozenset({"postprocess"})


def merged(preset: Any, given: Any) -> Any:
    """`given` over `preset`: objects key by key (recursively); anything else (lists, null) replaces."""
    if not isinstance(preset, dict) or not isinstance(given, dict):
        return given
    return {**preset, **{key: merged(preset[key], value) if key in preset else value for key, value in given.items()}}


def render_job(template: Template, variables: dict[str, Any], overrides: dict[str, Any],
               variant: int, variants: int) -> dict[str, Any]:
    """The job body for one variant: preset < template texts < explicit job fields (`postprocess`
    merged part by part, see MERGED_FIELDS).

    With several variants, each gets the template's next variation (if it has any) appended to the
    prompt; seeds are the caller's business (they must differ per variant).
    """
    values = resolve_variables(template, variables)
    body = dict(template.body.preset)
    body["prompt"] = fill(template.body.prompt, values)
    if template.body.narration:
        body["narration"] = fill(template.body.narration, values)
    for name, value in overrides.items():
        body[name] = merged(body[name], value) if name in MERGED_FIELDS and name in body else value
    variations = template.body.variations
    if variants > 1 and variations and "prompt" not in overrides:
        body["prompt"] = f"{body['prompt']} {variations[variant % len(variations)]}"
    return body


def _builtin(name: str, **body: Any) -> Template:
    return Template(name=name, body=TemplateBody.model_validate(body), builtin=True)


def _listing(name: str, description: str, framing: str, size: str) -> Template:
    return _builtin(
        name,
        description=description,
        prompt=f"{{{{product}}}} on a {{{{background}}}} background, {{{{style}}}}, {framing} framing, product centred",
        narration="{{product}}. {{benefit}}. Only {{price}}.",
        variables=[*_PRODUCT_VARIABLES,
                   {"name": "background", "type": "string", "default": "plain white"},
                   {"name": "price", "type": "string", "required": False, "default": "today", "max_length": 40}],
        preset={"model": "animatic", "seconds": 8.0, "size": size, "voice": "en-us"},
        variations=["turntable spin", "close-up on details", "in use"],
    )


_PRODUCT_VARIABLES = [
    {"name": "product", "type": "string", "description": "What is advertised, e.g. 'a stainless water purifier'"},
    {"name": "benefit", "type": "string", "required": False, "default": "made for everyday life",
     "description": "The one thing to remember"},
    {"name": "style", "type": "enum", "choices": ["clean studio", "lifestyle", "bold neon", "warm natural light"],
     "default": "clean studio"},
]

BUILTINS: dict[str, Template] = {template.name: template for template in (
    _builtin(
        "product-ad",
        description="A short 16:9 product advert with a voice-over and subtitles",
        prompt="{{product}}, {{style}} product shot, slow camera orbit, crisp detail, {{benefit}}",
        narration="Meet {{product}}. {{benefit}}.",
        variables=_PRODUCT_VARIABLES,
        # An advert that is black for more than 2 s is a failed render, whatever share of it that is.
        preset={"model": "animatic", "seconds": 12.0, "size": "1280x720", "voice": "en-us",
                "postprocess": {"qc": {"max_black_seconds": 2.0}}},
        variations=["hero close-up", "wide establishing shot", "hands-on demo", "top-down flat lay"],
    ),
    _listing("ecommerce-listing-9x16", "A vertical (9:16) marketplace listing clip for stories and reels",
             "vertical", "720x1280"),
    _listing("ecommerce-listing-1x1", "A square (1:1) marketplace listing clip for feeds and product pages",
             "square", "1024x1024"),
    _builtin(
        "explainer",
        description="A narrated explainer in a given number of steps",
        prompt="Clear animated explainer about {{topic}} for {{audience}}, {{steps}} simple steps, diagrams",
        narration="{{topic}}, explained in {{steps}} steps.",
        variables=[
            {"name": "topic", "type": "string"},
            {"name": "audience", "type": "enum", "choices": ["beginners", "professionals", "children"],
             "default": "beginners"},
            {"name": "steps", "type": "integer", "default": 3},
        ],
        preset={"model": "animatic", "seconds": 20.0, "size": "1280x720", "voice": "en-us"},
    ),
)}
