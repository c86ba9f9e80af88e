CREATE TABLE jobs (
    job_id            text PRIMARY KEY,
    tenant_id         text        NOT NULL,
    spec              bytea       NOT NULL,  -- reelforge.jobs.v1.JobSpec
    state             text        NOT NULL,
    status_sequence   bigint      NOT NULL DEFAULT 0,
    render_attempt    integer     NOT NULL DEFAULT 0,
    render_output_uri text,
    output_uri        text,
    output_seconds    double precision,
    reserved_micros   bigint,
    charged_micros    bigint,
    error_code        text,
    error_message     text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX jobs_active ON jobs (state) WHERE state NOT IN ('completed', 'failed', 'cancelled', 'expired');

-- Every transition, in order: the job's durable timeline.
CREATE TABLE job_transitions (
    job_id     text        NOT NULL REFERENCES jobs (job_id),
    sequence   bigint      NOT NULL,
    state      text        NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    error_code text,
    PRIMARY KEY (job_id, sequence)
);
