"""Gateway: the partner-facing API (REST), auth, job status, content download."""
