-- Admin API and limits: tenant status and limits (NULL = the gateway's default setting), key names,
-- per-key limits and rotation lineage, and the shared rate-limit buckets.
ALTER TABLE tenants ADD COLUMN status                text        NOT NULL DEFAULT 'active';  -- active, suspended
ALTER TABLE tenants ADD COLUMN rate_limit_per_minute integer;
ALTER TABLE tenants ADD COLUMN max_concurrent_jobs   integer;
ALTER TABLE tenants ADD COLUMN max_backlog_jobs      integer;
ALTER TABLE tenants ADD COLUMN updated_at            timestamptz NOT NULL DEFAULT now();

ALTER TABLE api_keys ADD COLUMN name                  text;
ALTER TABLE api_keys ADD COLUMN rate_limit_per_minute integer;
ALTER TABLE api_keys ADD COLUMN rotated_from          text REFERENCES api_keys (key_id);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at);
CREATE INDEX tenants_by_age ON tenants (created_at, tenant_id);

-- Token buckets shared by every gateway instance. Instances lease a few tokens at a time (one
-- statement per lease, not per request). UNLOGGED: after a crash the buckets start full, which only
-- forgives; nothing here is worth a WAL write.
CREATE UNLOGGED TABLE rate_buckets (
    bucket     text PRIMARY KEY,
    capacity   double precision NOT NULL,  -- requests per minute; also the burst
    tokens     double precision NOT NULL,
    wanted     integer          NOT NULL,
    granted    integer          NOT NULL,
    updated_at timestamptz      NOT NULL
);

-- A bucket's tokens after refilling at capacity per minute since `since`.
CREATE FUNCTION rate_refilled(tokens double precision, since timestamptz, at timestamptz,
                              capacity double precision) RETURNS double precision
    LANGUAGE sql IMMUTABLE AS
$$ SELECT least(capacity, tokens + greatest(0, extract(epoch FROM at - since)::double precision) * capacity / 60) $$;
