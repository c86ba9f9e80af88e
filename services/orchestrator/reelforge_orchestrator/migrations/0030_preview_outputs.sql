-- Preview assets of the finished video (postprocess thumbnail and sprite sheet), passed on in jobs.v1.status.
ALTER TABLE jobs ADD COLUMN thumbnail_uri text;
ALTER TABLE jobs ADD COLUMN sprite_uri    text;
