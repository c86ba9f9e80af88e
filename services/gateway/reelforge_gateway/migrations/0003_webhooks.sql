-- Partner webhook endpoints and the durable delivery queue (written in the status update's transaction).
CREATE TABLE webhook_endpoints (
    endpoint_id text PRIMARY KEY,
    tenant_id   text        NOT NULL REFERENCES tenants (tenant_id),
    url         text        NOT NULL,
    secret      text        NOT NULL,  -- needed in clear to sign; shown to the partner once
    events      text[]      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX webhook_endpoints_by_tenant ON webhook_endpoints (tenant_id) WHERE deleted_at IS NULL;

CREATE TABLE webhook_deliveries (
    delivery_id     text PRIMARY KEY,  -- the webhook-id header: the same on every retry
    endpoint_id     text        NOT NULL REFERENCES webhook_endpoints (endpoint_id),
    tenant_id       text        NOT NULL,
    event_type      text        NOT NULL,
    payload         json        NOT NULL,
    state           text        NOT NULL DEFAULT 'pending',  -- pending, delivered, dead
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
