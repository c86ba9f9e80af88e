-- How often each render was started here: more than once means a crash or redelivery interrupted it.
CREATE TABLE render_attempts (
    render_id  text PRIMARY KEY,
    job_id     text        NOT NULL,
    provider   text        NOT NULL,
    starts     integer     NOT NULL DEFAULT 1,
    started_at timestamptz NOT NULL DEFAULT now()
);
