-- Wakes the schema's outbox relay (LISTEN outbox_<schema>) when a transaction that wrote to the outbox
-- commits: one statement-level trigger instead of a pg_notify round trip per enqueue. Notifications
-- are delivered at commit and collapse within a transaction, so a batch wakes the relay once.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox_' || TG_TABLE_SCHEMA, '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
