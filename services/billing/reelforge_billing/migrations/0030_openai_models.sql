-- Default-plan prices for the OpenAI model names routed by the orchestrator (per output second, by
-- resolution tier: up to 720p, up to 1080p; 1024x1792 falls in the second).
INSERT INTO price_rules (plan_id, model, max_pixels, micros_per_second)
SELECT 'default', model, max_pixels, micros_per_second
FROM (VALUES ('sora-2', 921600, 100000), ('sora-2', 2073600, 150000),
             ('sora-2-pro', 921600, 300000), ('sora-2-pro', 2073600, 500000)) AS base (family, max_pixels, micros_per_second)
CROSS JOIN LATERAL (VALUES (family), (family || '-2025-10-06')) AS names (model)
UNION ALL
SELECT 'default', 'sora-2-2025-12-08', max_pixels, micros_per_second
FROM (VALUES (921600, 100000), (2073600, 150000)) AS dated (max_pixels, micros_per_second);
