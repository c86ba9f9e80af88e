-- Quality control of each job's latest finish, from postprocess.v1.result, shown to the partner
-- (a summary on the job, the full report at /v1/jobs/{id}/qc). A newer render's report replaces
-- an older one's; a redelivered report changes nothing.
CREATE TABLE qc_reports (
    job_id         text PRIMARY KEY REFERENCES jobs (job_id),
    tenant_id      text        NOT NULL,
    render_id      text        NOT NULL,
    render_attempt integer     NOT NULL,
    passed         boolean     NOT NULL,
    summary        jsonb       NOT NULL,
    report         jsonb       NOT NULL,
    checked_at     timestamptz NOT NULL DEFAULT now()
);
