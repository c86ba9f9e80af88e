-- OpenAI-compatible surface: preview assets of a finished video (download variants), the job a
-- remix / edit / extension derives from, and webhook endpoints as OpenAI shapes them (a name,
-- updated_at, and the previous signing secret, still valid for a while after a rotation).
ALTER TABLE jobs ADD COLUMN thumbnail_uri    text;
ALTER TABLE jobs ADD COLUMN sprite_uri       text;
ALTER TABLE jobs ADD COLUMN source_job_id    text;
ALTER TABLE jobs ADD COLUMN source_operation text;

ALTER TABLE webhook_endpoints ADD COLUMN name                    text        NOT NULL DEFAULT '';
ALTER TABLE webhook_endpoints ADD COLUMN updated_at              timestamptz NOT NULL DEFAULT now();
ALTER TABLE webhook_endpoints ADD COLUMN previous_secret         text;
ALTER TABLE webhook_endpoints ADD COLUMN previous_secret_expires timestamptz;
CREATE INDEX webhook_endpoints_page ON webhook_endpoints (tenant_id, created_at DESC, endpoint_id)
    WHERE deleted_at IS NULL;

-- OpenAI video characters: a named reference video a tenant uploads once (POST /v1/videos/characters).
CREATE TABLE video_characters (
    character_id text PRIMARY KEY,
    tenant_id    text        NOT NULL REFERENCES tenants (tenant_id),
    name         text        NOT NULL,
    video_uri    text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
