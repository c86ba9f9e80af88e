-- Wakes the streams that follow a job (gRPC Watch, LISTEN job_transitions_<schema>, payload the job id)
-- when a transaction that appended to its timeline (or deleted it) commits. The notification is only a
-- hint: a stream re-reads the job's timeline from the last entry it sent (reelforge_gateway.follow).
CREATE FUNCTION job_transitions_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('job_transitions_' || TG_TABLE_SCHEMA, NEW.job_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER job_transitions_notify AFTER UPDATE OF timeline, deleted_at ON jobs
    FOR EACH ROW EXECUTE FUNCTION job_transitions_notify();
