-- Partner API: the model name the partner asked for (routing is the orchestrator's), partner metadata,
-- inputs, soft deletion (OpenAI DELETE /v1/videos), cancellation requests, and idempotency keys.
ALTER TABLE jobs ADD COLUMN requested_model     text;
ALTER TABLE jobs ADD COLUMN metadata            jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE jobs ADD COLUMN input_reference_uri text;
ALTER TABLE jobs ADD COLUMN batch_id            text;
ALTER TABLE jobs ADD COLUMN completed_at        timestamptz;
ALTER TABLE jobs ADD COLUMN deleted_at          timestamptz;
ALTER TABLE jobs ADD COLUMN cancel_requested_at timestamptz;

CREATE INDEX jobs_by_tenant_state ON jobs (tenant_id, state, created_at DESC, job_id);
CREATE INDEX jobs_by_metadata ON jobs USING gin (metadata jsonb_path_ops);
CREATE INDEX jobs_by_batch ON jobs (tenant_id, batch_id) WHERE batch_id IS NOT NULL;

-- One row per (tenant, Idempotency-Key). The primary key is what makes concurrent duplicates safe:
-- the first transaction to insert wins; the others wait on the index and then read its answer.
CREATE TABLE idempotency_keys (
    tenant_id    text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    status_code  integer     NOT NULL,
    response     json        NOT NULL,  -- json, not jsonb: a replay is byte for byte the original
    job_id       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
