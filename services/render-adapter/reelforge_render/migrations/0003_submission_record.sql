-- Our own submission record for providers without an idempotency key: set before the submit call, cleared
-- when the provider answered. Still set after a restart means the outcome is unknown: the render is not
-- submitted again (it fails as retriable and the orchestrator starts a new attempt).
ALTER TABLE renders ADD COLUMN submit_pending boolean NOT NULL DEFAULT false;
