-- Every change of a job's row (not only its timeline) and of its QC report notifies the transitions channel:
-- status reads keep unchanged jobs in memory and drop one when it is notified (reelforge_gateway.job_reads).
-- Streams following the job are woken by these too; they re-read and find no new transition.
CREATE OR REPLACE FUNCTION job_transitions_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('job_transitions_' || TG_TABLE_SCHEMA, COALESCE(NEW.job_id, OLD.job_id));
    RETURN NULL;
END
$$;

DROP TRIGGER job_transitions_notify ON jobs;
CREATE TRIGGER job_transitions_notify AFTER UPDATE OR DELETE ON jobs
    FOR EACH ROW EXECUTE FUNCTION job_transitions_notify();
CREATE TRIGGER qc_report_notify AFTER INSERT OR UPDATE OR DELETE ON qc_reports
    FOR EACH ROW EXECUTE FUNCTION job_transitions_notify();
