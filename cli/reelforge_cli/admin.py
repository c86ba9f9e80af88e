"""`reelforge tenants ...` and `reelforge keys ...`: the gateway's admin API (/v1/admin) from the shell.

They need an admin-scoped key: --admin-key, REELFORGE_ADMIN_KEY, or the one `reelforge up` made.
Make the first one with `python -m reelforge_gateway create-admin-key`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from reelforge_cli.client import ApiError, Client, state_file

tenants = typer.Typer(help="Create, list, inspect and change tenants (admin key).", no_args_is_help=True)
keys = typer.Typer(help="Create, list, rotate and revoke a tenant's API keys (admin key).", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

Url = Annotated[str | None, typer.Option("--url", help="gateway URL (default: REELFORGE_API_URL or `reelforge up`)")]
AdminKey = Annotated[str | None, typer.Option("--admin-key", help="admin-scoped key (default: REELFORGE_ADMIN_KEY"
                                              " or `reelforge up`)")]
AsJson = Annotated[bool, typer.Option("--json", help="print the API's JSON instead of a table")]
LimitOption = Annotated[str | None, typer.Option(help="a number, 0 for no limit, or 'default'")]
_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def register(app: typer.Typer) -> None:
    app.add_typer(tenants, name="tenants")
    app.add_typer(keys, name="keys")


class AdminApi:
    def __init__(self, url: str | None, admin_key: str | None) -> None:
        state: dict[str, Any] = json.loads(state_file().read_text()) if state_file().exists() else {}
        url = url or os.environ.get("REELFORGE_API_URL") or state.get("gateway_url")
        admin_key = admin_key or os.environ.get("REELFORGE_ADMIN_KEY") or state.get("admin_api_key")
        if not url or not admin_key:
            err.print("[red]error:[/] no admin access configured: start the platform with `reelforge up`, or set"
                      " REELFORGE_API_URL and REELFORGE_ADMIN_KEY (make a key with"
                      " `python -m reelforge_gateway create-admin-key`)")
            raise typer.Exit(2)
        self._http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            err.print(f"[red]error:[/] cannot reach the gateway: {exc}")
            raise typer.Exit(1) from None
        try:
            return Client._json(response)
        except ApiError as exc:
            hint = " (is this key admin-scoped?)" if exc.code == "insufficient_scope" else ""
            err.print(f"[red]error:[/] {exc}{hint}")
            raise typer.Exit(1) from None


def _limit(value: str | None, name: str) -> tuple[bool, int | None]:
    """(given, value): 'default' clears the tenant's own limit."""
    if value is None:
        return False, None
    if value == "default":
        return True, None
    if not value.isdigit():
        err.print(f"[red]error:[/] --{name} must be a number, 0 for no limit, or 'default'")
        raise typer.Exit(2)
    return True, int(value)


def _seconds(value: str, name: str) -> int:
    match = _DURATION.match(value.strip())
    if not match:
        err.print(f"[red]error:[/] --{name} must be a duration like 90s, 15m, 24h or 30d")
        raise typer.Exit(2)
    return int(match.group(1)) * _UNITS[match.group(2)]


def _limits(rpm: str | None, max_concurrent: str | None, max_backlog: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for field, value, flag in [("rate_limit_per_minute", rpm, "rpm"), ("max_concurrent_jobs", max_concurrent,
                                                                       "max-concurrent"),
                               ("max_backlog_jobs", max_backlog, "max-backlog")]:
        given, number = _limit(value, flag)
        if given:
            body[field] = number
    return body


def _default(value: Any) -> str:
    return "default" if value is None else str(value)


_TENANT_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("id", lambda t: t["id"]), ("name", lambda t: t["name"]), ("status", lambda t: t["status"]),
    ("rpm", lambda t: _default(t["rate_limit_per_minute"])),
    ("max concurrent", lambda t: _default(t["max_concurrent_jobs"])),
    ("max backlog", lambda t: _default(t["max_backlog_jobs"])), ("created", lambda t: t["created_at"][:19]),
]
_KEY_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("id", lambda k: k["id"]), ("prefix", lambda k: k["prefix"]), ("name", lambda k: k["name"] or ""),
    ("scopes", lambda k: ",".join(k["scopes"])), ("status", lambda k: k["status"]),
    ("expires", lambda k: (k["expires_at"] or "never")[:19]), ("rotated from", lambda k: k["rotated_from"] or ""),
]


def _show(rows: list[dict[str, Any]], columns: list[tuple[str, Callable[[dict[str, Any]], str]]], as_json: bool,
          listing: bool = False) -> None:
    """A table (or the API's JSON: the list, or the one object). A key's secret is printed once, with a warning."""
    if as_json:
        console.print_json(json.dumps(rows if listing else rows[0]))
        return
    table = Table(show_header=True)
    for header, _ in columns:
        table.add_column(header)
    for row in rows:
        table.add_row(*(cell(row) for _, cell in columns))
    console.print(table)
    secret = next((row["key"] for row in rows if row.get("key")), None)
    if secret:
        console.print(f"key: [bold]{secret}[/]")
        err.print("[yellow]store it now: it is not kept and cannot be shown again[/]")


def _show_tenants(rows: list[dict[str, Any]], as_json: bool, listing: bool = False) -> None:
    _show(rows, _TENANT_COLUMNS, as_json, listing)


def _show_keys(rows: list[dict[str, Any]], as_json: bool, listing: bool = False) -> None:
    _show(rows, _KEY_COLUMNS, as_json, listing)


@tenants.command("create")
def create_tenant(
    name: str,
    rpm: LimitOption = None,
    max_concurrent: LimitOption = None,
    max_backlog: LimitOption = None,
    url: Url = None, admin_key: AdminKey = None, as_json: AsJson = False,
) -> None:
    """Create a tenant (then give it a key with `reelforge keys create TENANT_ID`)."""
    body = {"name": name, **_limits(rpm, max_concurrent, max_backlog)}
    _show_tenants([AdminApi(url, admin_key).call("POST", "/v1/admin/tenants", body)], as_json)


@tenants.command("list")
def list_tenants(url: Url = None, admin_key: AdminKey = None, as_json: AsJson = False) -> None:
    """Every tenant, oldest first."""
    api = AdminApi(url, admin_key)
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = api.call("GET", "/v1/admin/tenants", params={"limit": 100, **({"cursor": cursor} if cursor else {})})
        rows += page["data"]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    _show_tenants(rows, as_json, listing=True)


@tenants.command("get")
def get_tenant(tenant_id: str, url: Url = None, admin_key: AdminKey = None, as_json: AsJson = False) -> None:
    """One tenant."""
    _show_tenants([AdminApi(url, admin_key).call("GET", f"/v1/admin/tenants/{tenant_id}")], as_json)


@tenants.command("update")
def update_tenant(
    tenant_id: str,
    name: Annotated[str | None, typer.Option(help="new name")] = None,
    status: Annotated[str | None, typer.Option(help="active or suspended (suspended: every key is refused)")] = None,
    rpm: LimitOption = None,
    max_concurrent: LimitOption = None,
    max_backlog: LimitOption = None,
    url: Url = None, admin_key: AdminKey = None, as_json: AsJson = False,
) -> None:
    """Change a tenant's name, status or limits (only what you pass)."""
    body = _limits(rpm, max_concurrent, max_backlog)
    if name is not None:
        body["name"] = name
    if status is not None:
        body["status"] = status
    if not body:
        err.print("[red]error:[/] nothing to change: pass --name, --status, --rpm, --max-concurrent or --max-backlog")
        raise typer.Exit(2)
    _show_tenants([AdminApi(url, admin_key).call("PATCH", f"/v1/admin/tenants/{tenant_id}", body)], as_json)


@keys.command("create")
def create_key(
    tenant_id: str,
    scope: Annotated[list[str] | None, typer.Option(help="jobs:read, jobs:write or admin; repeat for several"
                                                    " (default: jobs:read and jobs:write)")] = None,
    name: Annotated[str | None, typer.Option(help="what the key is for")] = None,
    expires_in: Annotated[str | None, typer.Option(help="e.g. 30d, 12h (default: never)")] = None,
    rpm: LimitOption = None,
    url: Url = None, admin_key: AdminKey = None, as_json: AsJson = False,
) -> None:
    """Create a key for a tenant; the key is printed once."""
    body: dict[str, Any] = {}
    if scope:
        body["scopes"] = scope
    if name is not None:
        body["name"] = name
    if expires_in is not None:
        body["expires_in_seconds"] = _seconds(expires_in, "expires-in")
    given, number = _limit(rpm, "rpm")
    if given:
        body["rate_limit_per_minute"] = number
    _show_keys([AdminApi(url, admin_key).call("POST", f"/v1/admin/tenants/{tenant_id}/keys", body)], as_json)


@keys.command("list")
def list_keys(tenant_id: str, url: Url = None, admin_key: AdminKey = None, as_json: AsJson = False) -> None:
    """A tenant's keys (never their secrets)."""
    _show_keys(AdminApi(url, admin_key).call("GET", f"/v1/admin/tenants/{tenant_id}/keys")["data"], as_json,
               listing=True)


@keys.command("rotate")
def rotate_key(
    key_id: str,
    grace: Annotated[str, typer.Option(help="how long the old key keeps working, e.g. 1h, 0s")] = "24h",
    url: Url = None, admin_key: AdminKey = None, as_json: AsJson = False,
) -> None:
    """Issue a successor key (printed once); the old one works for the grace period."""
    body = {"grace_seconds": _seconds(grace, "grace")}
    _show_keys([AdminApi(url, admin_key).call("POST", f"/v1/admin/keys/{key_id}/rotate", body)], as_json)


@keys.command("revoke")
def revoke_key(key_id: str, url: Url = None, admin_key: AdminKey = None, as_json: AsJson = False) -> None:
    """Revoke a key at once."""
    _show_keys([AdminApi(url, admin_key).call("DELETE", f"/v1/admin/keys/{key_id}")], as_json)
