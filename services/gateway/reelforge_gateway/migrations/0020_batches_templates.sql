-- Batches (a JSON-lines upload, or the variants of one templated job request) and prompt templates.
CREATE TABLE batches (
    batch_id            text PRIMARY KEY,
    tenant_id           text        NOT NULL REFERENCES tenants (tenant_id),
    kind                text        NOT NULL,  -- 'upload' (POST /v1/batches) or 'variants' (POST /v1/jobs)
    line_count          integer     NOT NULL,
    job_count           integer     NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    cancel_requested_at timestamptz,
    completed_at        timestamptz  -- set in the transaction that ends its last job
);
CREATE INDEX batches_by_tenant ON batches (tenant_id, created_at DESC, batch_id);

ALTER TABLE jobs ADD COLUMN template   text;
ALTER TABLE jobs ADD COLUMN variant    integer NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN batch_line integer;
-- "Has this batch an unfinished job?" is one probe, however large the batch.
CREATE INDEX jobs_unfinished_by_batch ON jobs (batch_id)
    WHERE batch_id IS NOT NULL AND state NOT IN ('completed', 'failed', 'cancelled', 'expired');

-- A tenant's own templates (the built-ins live in code). `body` is a TemplateBody as JSON.
CREATE TABLE templates (
    tenant_id  text        NOT NULL REFERENCES tenants (tenant_id),
    name       text        NOT NULL,
    body       jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
