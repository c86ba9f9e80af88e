CREATE TABLE accounts (
    id        text PRIMARY KEY,
    tenant_id text,
    balance   bigint NOT NULL DEFAULT 0,
    currency  text   NOT NULL DEFAULT 'USD'
);

CREATE TABLE ledger_transactions (
    id         bigserial PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('grant', 'reserve', 'settle', 'release')),
    tenant_id  text NOT NULL,
    job_id     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, job_id)
);

-- Entries are immutable: corrections are new transactions.
CREATE TABLE ledger_entries (
    transaction_id bigint NOT NULL REFERENCES ledger_transactions (id),
    account_id     text   NOT NULL REFERENCES accounts (id),
    amount         bigint NOT NULL,
    PRIMARY KEY (transaction_id, account_id)
);

CREATE FUNCTION ledger_entries_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are immutable';
END $$;

CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_immutable();

-- Checked at commit: every transaction's entries sum to zero.
CREATE FUNCTION ledger_transaction_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE transaction_id = NEW.transaction_id) <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % does not balance', NEW.transaction_id;
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_transaction_balanced();

CREATE TABLE reservations (
    job_id          text PRIMARY KEY,
    tenant_id       text    NOT NULL,
    model           text    NOT NULL,
    width           integer NOT NULL,
    height          integer NOT NULL,
    seconds         numeric(10, 3) NOT NULL,
    micros_per_second bigint NOT NULL,
    held_micros     bigint  NOT NULL,
    charged_micros  bigint,
    state           text    NOT NULL CHECK (state IN ('held', 'settled', 'released')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz
);

CREATE TABLE rate_cards (
    model             text    NOT NULL,
    max_pixels        integer NOT NULL,
    micros_per_second bigint  NOT NULL CHECK (micros_per_second >= 0),
    PRIMARY KEY (model, max_pixels)
);

-- Partner prices per output second by resolution tier (up to 360p, 720p, 1080p, 4K).
INSERT INTO rate_cards (model, max_pixels, micros_per_second) VALUES
    ('animatic', 230400, 10000),
    ('animatic', 921600, 25000),
    ('animatic', 2073600, 50000),
    ('animatic', 8294400, 200000);
