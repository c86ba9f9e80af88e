-- What was finished, for the record (the inbox and outbox come from the core migrations).
CREATE TABLE finishes (
    job_id             text PRIMARY KEY,
    input_uri          text             NOT NULL,
    output_uri         text,
    error_code         text,
    processing_seconds double precision NOT NULL,
    finished_at        timestamptz      NOT NULL DEFAULT now()
);
