"""Operators' commands: `reelforge contracts get|set`, `reelforge pools list|pause|drain|resume|breaker`
(orchestrator admin gRPC) and `reelforge usage export|spend` (billing gRPC), as rich tables.

Each group is a Typer app registered on the main one by `register`; a new command is one more
function here calling `_admin()` or `_billing()` and `grpc_client.call`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from reelforge.billing.v1 import billing_pb2, billing_pb2_grpc, spend_pb2, spend_pb2_grpc
from reelforge.orchestrator.v1 import admin_pb2, admin_pb2_grpc
from reelforge_cli import grpc_client
from reelforge_cli.client import NotConfigured
from reelforge_cli.grpc_client import ADMIN, BILLING, Api, CallFailed

T = TypeVar("T")

contracts = typer.Typer(help="Get and set tenants' contracts (tier, weight, concurrency, quotas, models).",
                        no_args_is_help=True)
pools = typer.Typer(help="List capacity pools; pause, drain or resume one; show or set its circuit breaker.",
                    no_args_is_help=True)
usage = typer.Typer(help="Metered usage and spend from billing.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

AdminTarget = Annotated[str | None, typer.Option(
    "--admin", help="orchestrator admin gRPC host:port (default: REELFORGE_ADMIN_TARGET or `reelforge up`)")]
BillingTarget = Annotated[str | None, typer.Option(
    "--billing", help="billing gRPC host:port (default: REELFORGE_BILLING_TARGET or `reelforge up`)")]
OperatorToken = Annotated[str | None, typer.Option(
    "--token", help="operator token (default: REELFORGE_OPERATOR_TOKEN or `reelforge up`'s)")]


def register(app: typer.Typer) -> None:
    app.add_typer(contracts, name="contracts")
    app.add_typer(pools, name="pools")
    app.add_typer(usage, name="usage")


class _Session:
    """One API's stubs on an open channel, with every call made through `grpc_client.call`."""

    def __init__(self, api: Api, target: str, stub: Any, token: str | None) -> None:
        self.api, self.target, self.stub, self.token = api, target, stub, token

    def __call__(self, method: Callable[..., T], request: object) -> T:
        return grpc_client.call(self.api, self.target, method, request, self.token)


@contextmanager
def _session(api: Api, target: str | None, stub_class: Callable[[Any], Any],
             token: str | None) -> Iterator[_Session]:
    try:
        resolved = grpc_client.resolve(api, target)
    except NotConfigured as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    try:
        with grpc_client.open_channel(resolved) as channel:
            yield _Session(api, resolved, stub_class(channel), token)
    except CallFailed as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None


def _admin(target: str | None, token: str | None) -> Any:
    return _session(ADMIN, target, admin_pb2_grpc.OrchestratorAdminStub, token)


# -- contracts ------------------------------------------------------------------------------------

def _optional(message: Any, name: str, unit: str = "") -> str:
    return f"{getattr(message, name):g}{unit}" if message.HasField(name) else "none"


def _contract_table(c: admin_pb2.Contract) -> Table:
    table = Table(title=f"contract {c.tenant_id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("tier", c.tier), ("weight", f"{c.weight:g}"), ("max concurrent", str(c.max_concurrent)),
        ("requests per minute", str(c.requests_per_minute)),
        ("daily quota", _optional(c, "daily_seconds_quota", " s")),
        ("monthly quota", _optional(c, "monthly_seconds_quota", " s")),
        ("allowed models", ", ".join(c.allowed_models) or "every routed model"),
        ("max seconds", f"{c.max_seconds:g}"), ("max pixels", f"{c.max_pixels:,}"),
        ("default deadline", _optional(c, "default_deadline_seconds", " s")),
    ]
    for field, value in rows:
        table.add_row(field, value)
    return table


@contracts.command("get")
def contracts_get(tenant_id: Annotated[str, typer.Argument(help="tenant id; '*' is the default contract")],
                  admin: AdminTarget = None, token: OperatorToken = None) -> None:
    """Show a tenant's contract."""
    with _admin(admin, token) as call:
        console.print(_contract_table(call(call.stub.GetContract, admin_pb2.GetContractRequest(tenant_id=tenant_id))))


@contracts.command("set")
def contracts_set(
    tenant_id: Annotated[str, typer.Argument(help="tenant id; '*' is the default contract")],
    tier: Annotated[str | None, typer.Option(help="enterprise, standard or free (served in that order)")] = None,
    weight: Annotated[float | None, typer.Option(min=0.001, help="fair-share weight within the tier")] = None,
    max_concurrent: Annotated[int | None, typer.Option(min=1, help="jobs rendering at once")] = None,
    rpm: Annotated[int | None, typer.Option(min=1, help="admissions per minute")] = None,
    daily_seconds: Annotated[float | None, typer.Option(min=0, help="video seconds per UTC day")] = None,
    monthly_seconds: Annotated[float | None, typer.Option(min=0, help="video seconds per UTC month")] = None,
    no_daily_quota: Annotated[bool, typer.Option("--no-daily-quota", help="remove the daily quota")] = False,
    no_monthly_quota: Annotated[bool, typer.Option("--no-monthly-quota", help="remove the monthly quota")] = False,
    models: Annotated[str | None, typer.Option(help="comma-separated allowed models; '' allows every model")] = None,
    max_seconds: Annotated[float | None, typer.Option(min=1, help="longest job, seconds")] = None,
    max_pixels: Annotated[int | None, typer.Option(min=1, help="largest frame, width x height")] = None,
    deadline_seconds: Annotated[float | None, typer.Option(min=1, help="default deadline for its jobs")] = None,
    no_deadline: Annotated[bool, typer.Option("--no-deadline", help="remove the default deadline")] = False,
    admin: AdminTarget = None,
    token: OperatorToken = None,
) -> None:
    """Create or change a tenant's contract: only the options given change; a tenant without a
    contract of its own starts from the default ('*')."""
    with _admin(admin, token) as call:
        contract = _current_contract(call, tenant_id)
        for name, value in (("tier", tier), ("weight", weight), ("max_concurrent", max_concurrent),
                            ("requests_per_minute", rpm), ("daily_seconds_quota", daily_seconds),
                            ("monthly_seconds_quota", monthly_seconds), ("max_seconds", max_seconds),
                            ("max_pixels", max_pixels), ("default_deadline_seconds", deadline_seconds)):
            if value is not None:
                setattr(contract, name, value)
        if no_daily_quota:
            contract.ClearField("daily_seconds_quota")
        if no_monthly_quota:
            contract.ClearField("monthly_seconds_quota")
        if no_deadline:
            contract.ClearField("default_deadline_seconds")
        if models is not None:
            contract.ClearField("allowed_models")
            contract.allowed_models.extend(sorted({m.strip() for m in models.split(",") if m.strip()}))
        console.print(_contract_table(call(call.stub.SetContract, contract)))


def _current_contract(call: _Session, tenant_id: str) -> admin_pb2.Contract:
    contract: admin_pb2.Contract
    try:
        contract = call(call.stub.GetContract, admin_pb2.GetContractRequest(tenant_id=tenant_id))
        return contract
    except CallFailed as exc:
        if "(not_found)" not in str(exc) or tenant_id == "*":
            raise
    contract = call(call.stub.GetContract, admin_pb2.GetContractRequest(tenant_id="*"))
    contract.tenant_id = tenant_id
    return contract


# -- pools ----------------------------------------------------------------------------------------

_STATE_STYLE = {"active": "green", "paused": "yellow", "draining": "yellow"}
_CIRCUIT_STYLE = {"closed": "green", "half_open": "yellow", "open": "red"}


def _state(p: admin_pb2.PoolStatus) -> str:
    return "draining" if p.draining else "paused" if p.paused else "active"


def _pools_table(statuses: list[admin_pb2.PoolStatus]) -> Table:
    table = Table(title="pools")
    for column in ("pool", "provider", "model", "in use", "utilisation", "circuit", "state"):
        table.add_column(column, justify="right" if column in ("in use", "utilisation") else "left")
    for p in statuses:
        circuit = p.circuit or "unknown"
        table.add_row(p.pool_id, p.provider, p.model, f"{p.in_use}/{p.capacity}", f"{p.utilisation:.0%}",
                      f"[{_CIRCUIT_STYLE.get(circuit, 'dim')}]{circuit}[/]",
                      f"[{_STATE_STYLE[_state(p)]}]{_state(p)}[/]")
    return table


@pools.command("list")
def pools_list(admin: AdminTarget = None, token: OperatorToken = None) -> None:
    """Every pool: capacity in use, utilisation, circuit breaker, paused/draining."""
    with _admin(admin, token) as call:
        statuses = list(call(call.stub.GetPools, admin_pb2.GetPoolsRequest()).pools)
    if not statuses:
        console.print("no pools configured")
        return
    console.print(_pools_table(statuses))
    if any(not p.circuit for p in statuses):
        console.print("[dim]circuit unknown: the instance that answered is a standby, not the leader[/]")


def _set_mode(pool_id: str, mode: admin_pb2.PoolMode.ValueType, admin: str | None, token: str | None) -> None:
    with _admin(admin, token) as call:
        status = call(call.stub.SetPoolMode, admin_pb2.SetPoolModeRequest(pool_id=pool_id, mode=mode))
    console.print(f"pool [bold]{status.pool_id}[/] is now {_state(status)}")
    console.print(_pools_table([status]))


@pools.command("pause")
def pools_pause(pool_id: str, admin: AdminTarget = None, token: OperatorToken = None) -> None:
    """Stop giving the pool new work (jobs wait; in-flight renders go on). `resume` undoes it."""
    _set_mode(pool_id, admin_pb2.POOL_MODE_PAUSE, admin, token)


@pools.command("drain")
def pools_drain(pool_id: str, admin: AdminTarget = None, token: OperatorToken = None) -> None:
    """Let the pool finish what it renders and give it nothing new (before maintenance)."""
    _set_mode(pool_id, admin_pb2.POOL_MODE_DRAIN, admin, token)


@pools.command("resume")
def pools_resume(pool_id: str, admin: AdminTarget = None, token: OperatorToken = None) -> None:
    """Give the pool work again."""
    _set_mode(pool_id, admin_pb2.POOL_MODE_RESUME, admin, token)


BreakerField = Literal["window", "min_calls", "error_rate", "open_seconds", "half_open_probes"]
_BREAKER_FIELDS: tuple[tuple[BreakerField, str, str], ...] = (  # proto field, label, unit
    ("window", "window", " outcomes"),
    ("min_calls", "min calls", ""),
    ("error_rate", "error rate to open", ""),
    ("open_seconds", "open for", " s"),
    ("half_open_probes", "half-open probes", ""),
)


_UINT32 = 2**32 - 1  # the admin API checks the real bounds and says what is wrong


def _breaker_table(status: admin_pb2.PoolStatus) -> Table:
    table = Table(title=f"circuit breaker of {status.pool_id} ({status.circuit or 'unknown'})")
    for column in ("setting", "value", "from"):
        table.add_column(column)
    for name, label, unit in _BREAKER_FIELDS:
        source = "pool" if status.breaker_overrides.HasField(name) else "process default"
        table.add_row(label, f"{getattr(status.breaker, name):g}{unit}", source)
    return table


@pools.command("breaker")
def pools_breaker(
    pool_id: str,
    window: Annotated[int | None, typer.Option(
        min=0, max=_UINT32, help="outcomes the error rate is taken over")] = None,
    min_calls: Annotated[int | None, typer.Option(
        min=0, max=_UINT32, help="no verdict on fewer outcomes (at most the window)")] = None,
    error_rate: Annotated[float | None, typer.Option(help="failed share that opens it, in (0, 1]")] = None,
    open_seconds: Annotated[float | None, typer.Option(help="how long it stays open before probing")] = None,
    probes: Annotated[int | None, typer.Option(
        min=0, max=_UINT32, help="half-open probes; all must succeed to close it")] = None,
    reset: Annotated[bool, typer.Option(
        "--reset", help="drop the pool's own settings first: back to the process defaults")] = False,
    admin: AdminTarget = None,
    token: OperatorToken = None,
) -> None:
    """Show the pool's circuit breaker; with options, change the pool's own settings (the rest are kept).

    The orchestrator's leader applies a change to the live breaker at once; it keeps its state."""
    changes = {"window": window, "min_calls": min_calls, "error_rate": error_rate, "open_seconds": open_seconds,
               "half_open_probes": probes}
    with _admin(admin, token) as call:
        statuses = call(call.stub.GetPools, admin_pb2.GetPoolsRequest()).pools
        status = next((p for p in statuses if p.pool_id == pool_id), None)
        if status is None:
            raise CallFailed(f"no pool {pool_id!r} (not_found)")
        if reset or any(value is not None for value in changes.values()):
            breaker = admin_pb2.CircuitBreakerPolicy() if reset else status.breaker_overrides
            for name, value in changes.items():
                if value is not None:
                    setattr(breaker, name, value)
            status = call(call.stub.SetPoolBreaker, admin_pb2.SetPoolBreakerRequest(pool_id=pool_id, breaker=breaker))
            console.print(f"pool [bold]{pool_id}[/]: circuit breaker changed")
    console.print(_breaker_table(status))


# -- usage ----------------------------------------------------------------------------------------

@usage.command("export")
def usage_export(
    tenant_id: str,
    month: Annotated[str | None, typer.Option(help="YYYY-MM (UTC); default: every month")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write the CSV here (default: stdout)")] = None,
    billing: BillingTarget = None,
    token: OperatorToken = None,
) -> None:
    """A tenant's metered usage as CSV (one row per billed output)."""
    with _session(BILLING, billing, billing_pb2_grpc.BillingServiceStub, token) as call:
        exported = call(call.stub.ExportUsage, billing_pb2.ExportUsageRequest(tenant_id=tenant_id, month=month or ""))
    if output is None:
        sys.stdout.write(exported.csv)
    else:
        output.write_text(exported.csv)
    err.print(f"exported {exported.rows} usage rows for {tenant_id}" + (f" to {output}" if output else ""))


@usage.command("spend")
def usage_spend(
    day: Annotated[str | None, typer.Option(help="YYYY-MM-DD (UTC); default: today")] = None,
    billing: BillingTarget = None,
    token: OperatorToken = None,
) -> None:
    """What every tenant was charged on a day, and what the providers cost."""
    with _session(BILLING, billing, spend_pb2_grpc.SpendServiceStub, token) as call:
        spend = call(call.stub.GetSpend, spend_pb2.GetSpendRequest(day=day or ""))
    table = Table(title=f"spend {spend.day} (UTC, {spend.currency})")
    for column in ("tenant", "jobs", "charged", "of which free", "provider cost"):
        table.add_column(column, justify="left" if column == "tenant" else "right")
    for t in spend.tenants:
        table.add_row(t.tenant_id, str(t.jobs), _money(t.charged_micros), _money(t.free_micros),
                      _money(t.provider_cost_micros))
    table.add_section()
    table.add_row("total", "", _money(spend.charged_micros), _money(spend.free_micros),
                  _money(spend.provider_cost_micros), style="bold")
    console.print(table)


def _money(micros: int) -> str:
    return f"{micros / 1_000_000:,.4f}"
