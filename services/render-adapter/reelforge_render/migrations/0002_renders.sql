-- Every render this adapter accepted. Unfinished rows are the in-flight set: a restarted adapter loads
-- them and resumes polling (external_id set) or submits (not yet set, with the same idempotency key).
CREATE TABLE renders (
    render_id        text PRIMARY KEY,
    job_id           text        NOT NULL,
    tenant_id        text        NOT NULL,
    provider         text        NOT NULL,
    spec             bytea       NOT NULL,
    trace_headers    jsonb       NOT NULL DEFAULT '{}',
    external_id      text,
    state            text        NOT NULL DEFAULT 'accepted' CHECK (state IN ('accepted', 'submitted', 'finished')),
    cancel_requested boolean     NOT NULL DEFAULT false,
    accepted_at      timestamptz NOT NULL DEFAULT now(),
    deadline_at      timestamptz NOT NULL,
    submitted_at     timestamptz,
    finished_at      timestamptz,
    error_code       text
);
CREATE INDEX renders_in_flight ON renders (accepted_at) WHERE state <> 'finished';
CREATE INDEX renders_by_external_id ON renders (provider, external_id) WHERE state <> 'finished';

-- Cancels that arrived before their render request (different topics, no ordering between them).
CREATE TABLE early_cancels (
    render_id   text PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now()
);
