-- The operators' spend-by-day view reads settlements and refunds, and metered usage, by time
-- across every tenant.
CREATE INDEX ledger_transactions_charges_time ON ledger_transactions (created_at) WHERE kind IN ('settle', 'refund');
CREATE INDEX usage_records_time ON usage_records (occurred_at);
