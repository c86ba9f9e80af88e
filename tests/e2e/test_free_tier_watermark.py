"""Free-tier output carries the watermark, paid output does not: the same deterministic render for
two tenants, one on a `free` contract, compared pixel by pixel on a decoded frame."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from reelforge_local.stack import Stack
from tests.e2e.helpers import submit, wait_for

CORNER = (0.45, 0.0, 1.0, 0.15)  # where the watermark goes: top right
ELSEWHERE = (0.0, 0.3, 1.0, 0.7)


def _luma(path: Path, at_s: float) -> tuple[int, int, bytes]:
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-ss", str(at_s), "-i", str(path), "-frames:v", "1", "-f", "rawvideo",
         "-pix_fmt", "gray", "-"], capture_output=True, check=True,
    ).stdout  # fmt: skip
    return 640, 360, out


def _brighter(free: tuple[int, int, bytes], paid: tuple[int, int, bytes], box: tuple[float, ...]) -> int:
    width, height, a = free
    b = paid[2]
    x0, y0, x1, y1 = (round(v * s) for v, s in zip(box, (width, height, width, height), strict=True))
    return sum(1 for y in range(y0, y1) for x in range(x0, x1) if a[y * width + x] - b[y * width + x] > 40)


def _finish(stack: Stack, api_key: str, tmp_path: Path, name: str) -> Path:
    with httpx.Client(base_url=stack.gateway_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=15) as api:
        job = submit(api, prompt="A water purifier on a kitchen counter.", seconds=2, size="640x360", seed=11)
        done = wait_for(api, job["id"], {"completed", "failed"}, timeout=180)
        assert done["status"] == "completed", done
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(api.get(f"/v1/jobs/{job['id']}/content").content)
        return path


def test_only_free_tier_output_is_watermarked(stack: Stack, tmp_path: Path) -> None:
    free = stack.create_tenant("wm-free", credit_usd="5")
    paid = stack.create_tenant("wm-paid", credit_usd="5")
    stack.cli("orchestrator", "set-contract", free.tenant_id, "--tier", "free")
    time.sleep(6)  # the leader reloads contracts every 5 s

    free_frame = _luma(_finish(stack, free.api_key, tmp_path, "free"), 1.0)
    paid_frame = _luma(_finish(stack, paid.api_key, tmp_path, "paid"), 1.0)

    assert _brighter(free_frame, paid_frame, CORNER) > 150  # white text over the same picture
    assert _brighter(free_frame, paid_frame, ELSEWHERE) == 0  # nothing else differs
    assert _brighter(paid_frame, free_frame, CORNER) == 0
