CREATE TABLE tenants (
    tenant_id  text PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id     text PRIMARY KEY,
    tenant_id  text        NOT NULL REFERENCES tenants (tenant_id),
    prefix     text        NOT NULL UNIQUE,
    key_hash   text        NOT NULL,
    scopes     text[]      NOT NULL DEFAULT ARRAY['jobs:write', 'jobs:read'],
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz
);

-- The partner-facing view of each job, kept current from jobs.v1.status.
CREATE TABLE jobs (
    job_id          text PRIMARY KEY,
    tenant_id       text             NOT NULL REFERENCES tenants (tenant_id),
    model           text             NOT NULL,
    prompt          text             NOT NULL,
    seconds         double precision NOT NULL,
    width           integer          NOT NULL,
    height          integer          NOT NULL,
    narration       text,
    voice           text             NOT NULL,
    seed            bigint           NOT NULL,
    state           text             NOT NULL DEFAULT 'queued',
    progress        integer          NOT NULL DEFAULT 0,
    status_sequence bigint           NOT NULL DEFAULT 0,
    timeline        jsonb            NOT NULL DEFAULT '[]'::jsonb,
    error_code      text,
    error_message   text,
    output_uri      text,
    output_seconds  double precision,
    cost_micros     bigint,
    currency        text,
    created_at      timestamptz      NOT NULL DEFAULT now(),
    updated_at      timestamptz      NOT NULL DEFAULT now()
);

CREATE INDEX jobs_by_tenant ON jobs (tenant_id, created_at DESC, job_id);
