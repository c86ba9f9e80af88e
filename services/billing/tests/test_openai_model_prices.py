"""The OpenAI model names the gateway accepts are priced on the default plan (migration 0030)."""

from __future__ import annotations

import pytest

from services.billing.tests.billing_db import open_store


@pytest.mark.asyncio
async def test_sora_names_have_default_prices(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn)
    try:
        prices = {(model, size): (await store.rate_for(pool, "t1", model, *size)).micros_per_second
                  for model in ("sora-2", "sora-2-2025-12-08", "sora-2-pro", "sora-2-pro-2025-10-06")
                  for size in ((1280, 720), (1024, 1792))}
        assert prices == {
            ("sora-2", (1280, 720)): 100_000, ("sora-2", (1024, 1792)): 150_000,
            ("sora-2-2025-12-08", (1280, 720)): 100_000, ("sora-2-2025-12-08", (1024, 1792)): 150_000,
            ("sora-2-pro", (1280, 720)): 300_000, ("sora-2-pro", (1024, 1792)): 500_000,
            ("sora-2-pro-2025-10-06", (1280, 720)): 300_000, ("sora-2-pro-2025-10-06", (1024, 1792)): 500_000,
        }
    finally:
        await pool.close()
