-- Ledger totals per account kind and currency, kept incrementally for the metrics (never by summing
-- the whole ledger on a scrape). fold_ledger_totals() adds the entries of every transaction that
-- finished since the last fold: each ledger transaction records the id of the database transaction
-- that wrote it, and every id below the oldest one still running (the snapshot's xmin) is finished.
-- So a fold takes [the last bound, the current xmin): nothing is counted twice, and a transaction
-- still open (or committing late) is counted by a later fold. The writers touch no shared row.

ALTER TABLE ledger_transactions ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX ledger_transactions_xid ON ledger_transactions (xid);

CREATE TABLE ledger_totals (
    account_kind text   NOT NULL,
    currency     text   NOT NULL,
    in_micros    numeric NOT NULL DEFAULT 0,  -- positive amounts posted (the account grew)
    out_micros   numeric NOT NULL DEFAULT 0,  -- negative amounts posted, as a positive number
    entries      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (account_kind, currency)
);

CREATE TABLE ledger_totals_state (
    id           integer PRIMARY KEY CHECK (id = 1),
    folded_below xid8 NOT NULL,
    folded_at    timestamptz
);
INSERT INTO ledger_totals_state (id, folded_below) VALUES (1, '0');

-- Bounded: the tenant accounts fold into two kinds, the platform accounts are a fixed set.
CREATE FUNCTION ledger_account_kind(p_account text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_account LIKE 'tenant:%:available' THEN 'tenant_available'
        WHEN p_account LIKE 'tenant:%:reserved' THEN 'tenant_reserved'
        WHEN p_account IN ('platform:revenue', 'platform:grants', 'platform:promotions', 'platform:free-usage')
            THEN replace(substr(p_account, 10), '-', '_')
        ELSE 'other'
    END
$$;

CREATE FUNCTION fold_ledger_totals() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_from xid8;
    v_to   xid8;
    v_rows bigint;
BEGIN
    -- One folder at a time (several billing instances may try); the others wait, then see the new bound.
    SELECT folded_below INTO v_from FROM ledger_totals_state WHERE id = 1 FOR UPDATE;
    v_to := pg_snapshot_xmin(pg_current_snapshot());
    IF v_to <= v_from THEN
        RETURN 0;
    END IF;
    INSERT INTO ledger_totals AS lt (account_kind, currency, in_micros, out_micros, entries)
    SELECT ledger_account_kind(e.account_id), a.currency,
           coalesce(sum(e.amount) FILTER (WHERE e.amount > 0), 0),
           coalesce(-sum(e.amount) FILTER (WHERE e.amount < 0), 0),
           count(*)
    FROM ledger_transactions t
    JOIN ledger_entries e ON e.transaction_id = t.id
    JOIN accounts a ON a.id = e.account_id
    WHERE t.xid >= v_from AND t.xid < v_to
    GROUP BY 1, 2
    ON CONFLICT (account_kind, currency) DO UPDATE
        SET in_micros = lt.in_micros + EXCLUDED.in_micros,
            out_micros = lt.out_micros + EXCLUDED.out_micros,
            entries = lt.entries + EXCLUDED.entries;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    UPDATE ledger_totals_state SET folded_below = v_to, folded_at = now() WHERE id = 1;
    RETURN v_rows;
END $$;
