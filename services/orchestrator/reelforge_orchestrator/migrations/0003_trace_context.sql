-- The W3C trace context of the request that admitted the job (JSON headers), so a dispatch made
-- later by the scheduler loop continues the job's trace.
ALTER TABLE jobs ADD COLUMN trace_headers text;
