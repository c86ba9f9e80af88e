-- One finish per render attempt (a QC failure can send a job back for a new render), with the QC
-- report and the URIs of every output.
ALTER TABLE finishes ADD COLUMN finish_key text;
UPDATE finishes SET finish_key = job_id;
ALTER TABLE finishes ALTER COLUMN finish_key SET NOT NULL;
ALTER TABLE finishes DROP CONSTRAINT finishes_pkey;
ALTER TABLE finishes ADD PRIMARY KEY (finish_key);
ALTER TABLE finishes ADD COLUMN render_id text;
ALTER TABLE finishes ADD COLUMN qc_passed boolean;
ALTER TABLE finishes ADD COLUMN qc_report jsonb;
ALTER TABLE finishes ADD COLUMN outputs jsonb;
ALTER TABLE finishes ADD COLUMN stage_seconds jsonb;
CREATE INDEX finishes_job_id ON finishes (job_id);
