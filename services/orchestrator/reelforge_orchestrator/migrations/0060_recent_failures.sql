-- The ops console lists the most recent failures and counts them by code.
CREATE INDEX jobs_failed_recent ON jobs (updated_at DESC) WHERE state IN ('failed', 'expired');
