-- Tenant contracts. tenant_id '*' is the default for tenants without a contract of their own.
CREATE TABLE tenant_contracts (
    tenant_id                text PRIMARY KEY,
    tier                     text             NOT NULL DEFAULT 'standard',
    weight                   double precision NOT NULL DEFAULT 1 CHECK (weight > 0),
    max_concurrent           integer          NOT NULL DEFAULT 8 CHECK (max_concurrent >= 1),
    requests_per_minute      integer          NOT NULL DEFAULT 600 CHECK (requests_per_minute >= 1),
    daily_seconds_quota      double precision,
    monthly_seconds_quota    double precision,
    allowed_models           text[]           NOT NULL DEFAULT '{}',  -- empty: every routed model
    max_seconds              double precision NOT NULL DEFAULT 60,
    max_pixels               bigint           NOT NULL DEFAULT 8294400, -- 3840x2160
    default_deadline_seconds double precision,
    updated_at               timestamptz      NOT NULL DEFAULT now()
);
INSERT INTO tenant_contracts (tenant_id) VALUES ('*');

-- Capacity pools: one per provider and model; gpus > 0 makes it a GPU pool counted in GPUs.
CREATE TABLE capacity_pools (
    pool_id                           text PRIMARY KEY,
    provider                          text             NOT NULL,
    model                             text             NOT NULL,
    slots                             integer          NOT NULL DEFAULT 4 CHECK (slots >= 0),
    requests_per_minute               integer          NOT NULL DEFAULT 600 CHECK (requests_per_minute >= 1),
    cost_micros_per_second            jsonb            NOT NULL DEFAULT '{}',  -- {"720p": 50000, ...}
    latency_seconds_per_output_second double precision NOT NULL DEFAULT 1,
    fixed_latency_seconds             double precision NOT NULL DEFAULT 0,
    gpus                              integer          NOT NULL DEFAULT 0,
    gpus_per_job                      integer          NOT NULL DEFAULT 8,
    gpu_seconds_per_output_second     double precision NOT NULL DEFAULT 8,
    paused                            boolean          NOT NULL DEFAULT false,
    draining                          boolean          NOT NULL DEFAULT false,
    updated_at                        timestamptz      NOT NULL DEFAULT now()
);

-- A requested model maps to an ordered set of pools.
CREATE TABLE model_routes (
    model    text    NOT NULL,
    position integer NOT NULL,
    pool_id  text    NOT NULL REFERENCES capacity_pools (pool_id) ON DELETE CASCADE,
    PRIMARY KEY (model, position)
);

-- The local FFmpeg renderer: the default that keeps the demo and the tests working offline.
INSERT INTO capacity_pools (pool_id, provider, model, slots, latency_seconds_per_output_second)
VALUES ('animatic', 'animatic', 'animatic', 8, 0.5);
INSERT INTO model_routes (model, position, pool_id) VALUES ('animatic', 0, 'animatic');

-- Scheduling state on the job: the durable side of every decision.
ALTER TABLE jobs
    ADD COLUMN pool_id         text,         -- the pool rendering it now (NULL while waiting)
    ADD COLUMN provider        text,
    ADD COLUMN admitted_at     timestamptz,
    ADD COLUMN deadline        timestamptz,
    ADD COLUMN dispatched_at   timestamptz,
    ADD COLUMN retry_at        timestamptz,  -- waiting to retry a failed render after backoff
    ADD COLUMN avoid_pools     text[]        NOT NULL DEFAULT '{}';

-- Leadership: the advisory lock says who leads; the epoch fences a deposed leader's writes.
CREATE TABLE leader_lease (
    id         integer PRIMARY KEY CHECK (id = 1),
    epoch      bigint      NOT NULL,
    holder     text        NOT NULL,
    since      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO leader_lease (id, epoch, holder) VALUES (1, 0, '');
