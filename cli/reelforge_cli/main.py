"""`reelforge`: bring the platform up and down, submit and watch jobs."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from reelforge_cli import admin, operations
from reelforge_cli.client import ApiError, Client, NotConfigured, resolve_target, state_file

app = typer.Typer(help="Reelforge: AI video generation at volume.", no_args_is_help=True, add_completion=False)
jobs = typer.Typer(help="Submit, watch and download jobs.", no_args_is_help=True)
app.add_typer(jobs, name="jobs")
admin.register(app)
operations.register(app)
console = Console()
err = Console(stderr=True)

TERMINAL = {"completed", "failed", "cancelled", "expired"}
Url = Annotated[str | None, typer.Option("--url", help="gateway URL (default: REELFORGE_API_URL or `reelforge up`)")]
Key = Annotated[str | None, typer.Option("--api-key", help="API key (default: REELFORGE_API_KEY or `reelforge up`)")]


def _client(url: str | None, api_key: str | None) -> Client:
    try:
        return Client(resolve_target(url, api_key))
    except NotConfigured as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None


def _cache() -> Path:
    return Path(os.environ.get("REELFORGE_CACHE", ".cache"))


@app.command()
def up(replicas: Annotated[int, typer.Option(min=1, max=4, help="instances of each service")] = 1) -> None:
    """Run Kafka, PostgreSQL and the five services here until Ctrl-C (or `reelforge down`)."""
    from reelforge_local.demo import main_up

    raise typer.Exit(main_up(_cache() / "run", _cache(), replicas))


@app.command()
def down() -> None:
    """Stop the platform that `reelforge up` started."""
    if not state_file().exists():
        err.print("nothing to stop: no platform started by `reelforge up` is running")
        raise typer.Exit(1)
    pid = int(json.loads(state_file().read_text())["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        state_file().unlink(missing_ok=True)
        err.print("the platform was not running (stale state removed)")
        raise typer.Exit(1) from None
    console.print(f"stopping the platform (pid {pid})…")


@app.command()
def demo() -> None:
    """Bring the platform up, render the sample water-purifier ad end to end, and stop."""
    from reelforge_local.demo import main_demo

    raise typer.Exit(main_demo(_cache() / "run", _cache(), Path("out")))


@jobs.command("submit")
def submit(
    prompt: Annotated[str, typer.Argument(help="what the video shows")],
    seconds: Annotated[float, typer.Option(help="duration, 1-60")] = 8,
    size: Annotated[str, typer.Option(help="e.g. 1280x720, 720x1280, 1024x1024")] = "1280x720",
    narration: Annotated[str | None, typer.Option(help="voice-over text, also the subtitles")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow it to the end")] = True,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="save the MP4 here when done")] = None,
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Submit a job (and by default watch it and download the result)."""
    body: dict[str, Any] = {"prompt": prompt, "seconds": seconds, "size": size}
    if narration:
        body["narration"] = narration
    if seed is not None:
        body["seed"] = seed
    with _client(url, api_key) as client:
        job = _call(client.submit, body)
        console.print(f"submitted [bold]{job['id']}[/]")
        if wait:
            job = _follow(client, job["id"])
            _summary(job)
            if output and job["status"] == "completed":
                size_bytes = _call(client.download, job["id"], output)
                console.print(f"saved {output} ({size_bytes:,} bytes)")
            if job["status"] != "completed":
                raise typer.Exit(1)


@jobs.command("watch")
def watch(job_id: str, url: Url = None, api_key: Key = None) -> None:
    """Follow a job with a progress bar until it ends."""
    with _client(url, api_key) as client:
        _summary(_follow(client, job_id))


@jobs.command("get")
def get(job_id: str, url: Url = None, api_key: Key = None) -> None:
    """Print a job as JSON."""
    with _client(url, api_key) as client:
        console.print_json(json.dumps(_call(client.get, job_id)))


@jobs.command("download")
def download(job_id: str, output: Annotated[Path, typer.Option("-o", "--output")], url: Url = None,
             api_key: Key = None) -> None:
    """Save a completed job's MP4."""
    with _client(url, api_key) as client:
        console.print(f"saved {output} ({_call(client.download, job_id, output):,} bytes)")


def _call(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ApiError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        err.print(f"[red]error:[/] cannot reach the gateway: {exc}")
        raise typer.Exit(1) from None


def _follow(client: Client, job_id: str) -> dict[str, Any]:
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("queued", total=100)
        while True:
            job: dict[str, Any] = _call(client.get, job_id)
            progress.update(task, completed=job["progress"], description=job["status"])
            if job["status"] in TERMINAL:
                return job
            time.sleep(0.25)


def _summary(job: dict[str, Any]) -> None:
    table = Table(title=f"{job['id']} — {job['status']}", show_header=True)
    table.add_column("status")
    table.add_column("at")
    for entry in job["timeline"]:
        table.add_row(entry["status"], entry["at"])
    console.print(table)
    if job.get("error"):
        err.print(f"[red]{job['error']['code']}[/]: {job['error']['message']}")
    if job.get("cost"):
        console.print(f"cost: {job['cost']['amount_micros'] / 1e6:.4f} {job['cost']['currency']}")
