-- OpenAI model names (what the OpenAI-compatible /v1/videos accepts) are routes like any other. They
-- render on the local animatic pool until an operator routes them to a provider pool (admin API).
INSERT INTO model_routes (model, position, pool_id) VALUES
    ('sora-2', 0, 'animatic'),
    ('sora-2-pro', 0, 'animatic'),
    ('sora-2-2025-10-06', 0, 'animatic'),
    ('sora-2-2025-12-08', 0, 'animatic'),
    ('sora-2-pro-2025-10-06', 0, 'animatic')
ON CONFLICT DO NOTHING;
