-- The inbox forgets event ids once no redelivery can bring them back (outbox.forget_processed):
-- rows arrive in processed_at order, so a BRIN index finds the old ones at almost no write cost.
CREATE INDEX inbox_processed_at ON inbox USING brin (processed_at);
