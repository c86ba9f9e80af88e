-- Rate cards with plans, per-tenant overrides and effective dates; provider cost per pool;
-- free grants; postpaid credit limits; refunds; metered usage; budget alerts.

ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_kind_check;
ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_kind_check
    CHECK (kind IN ('grant', 'reserve', 'settle', 'release', 'refund'));
-- Refunds are idempotent by their own id, not by job (a job may get more than one partial refund).
ALTER TABLE ledger_transactions ADD COLUMN ref text;
ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_kind_job_id_key;
CREATE UNIQUE INDEX ledger_transactions_once ON ledger_transactions (kind, job_id) WHERE kind <> 'refund';
CREATE UNIQUE INDEX ledger_transactions_refund_once ON ledger_transactions (ref) WHERE kind = 'refund';
CREATE INDEX ledger_transactions_tenant_time ON ledger_transactions (tenant_id, created_at);

CREATE TABLE plans (
    id   text PRIMARY KEY,
    name text NOT NULL
);
INSERT INTO plans (id, name) VALUES ('default', 'Default');

-- Partner price per output second by model and resolution tier. A row belongs to a plan or is a
-- per-tenant override (which wins over the plan); the newest row in effect at a time applies.
CREATE TABLE price_rules (
    id                bigserial PRIMARY KEY,
    plan_id           text REFERENCES plans (id),
    tenant_id         text,
    model             text    NOT NULL,
    max_pixels        integer NOT NULL CHECK (max_pixels > 0),
    micros_per_second bigint  NOT NULL CHECK (micros_per_second >= 0),
    effective_from    timestamptz NOT NULL DEFAULT '-infinity',
    CHECK ((plan_id IS NULL) <> (tenant_id IS NULL))
);
CREATE INDEX price_rules_lookup ON price_rules (model, plan_id, tenant_id);

INSERT INTO price_rules (plan_id, model, max_pixels, micros_per_second)
    SELECT 'default', model, max_pixels, micros_per_second FROM rate_cards;
DROP TABLE rate_cards;

-- What a provider or GPU pool costs us per output second (for margins and reconciliation).
CREATE TABLE provider_costs (
    id                bigserial PRIMARY KEY,
    pool              text    NOT NULL,
    model             text    NOT NULL,
    max_pixels        integer NOT NULL CHECK (max_pixels > 0),
    micros_per_second bigint  NOT NULL CHECK (micros_per_second >= 0),
    effective_from    timestamptz NOT NULL DEFAULT '-infinity'
);
CREATE INDEX provider_costs_lookup ON provider_costs (pool, model);

-- The offline renderer costs a little CPU time.
INSERT INTO provider_costs (pool, model, max_pixels, micros_per_second) VALUES
    ('animatic', 'animatic', 8294400, 2000);

-- How a tenant pays: its plan, prepaid (spend only credit) or postpaid (owe up to credit_limit),
-- and an optional monthly budget that triggers alerts at 80% and 100%.
CREATE TABLE billing_profiles (
    tenant_id             text PRIMARY KEY,
    plan_id               text   NOT NULL DEFAULT 'default' REFERENCES plans (id),
    mode                  text   NOT NULL DEFAULT 'prepaid' CHECK (mode IN ('prepaid', 'postpaid')),
    credit_limit_micros   bigint NOT NULL DEFAULT 0 CHECK (credit_limit_micros >= 0),
    monthly_budget_micros bigint CHECK (monthly_budget_micros > 0)
);

-- Free grants are promises (seconds or money) until a job uses them; the ledger records what was
-- used (platform:promotions pays for it). Expired grants simply stop funding new reservations.
CREATE TABLE free_grants (
    id                bigserial PRIMARY KEY,
    tenant_id         text NOT NULL,
    unit              text NOT NULL CHECK (unit IN ('seconds', 'micros')),
    amount            numeric(14, 3) NOT NULL CHECK (amount > 0),
    remaining         numeric(14, 3) NOT NULL CHECK (remaining >= 0),
    expires_at        timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (remaining <= amount)
);
CREATE INDEX free_grants_tenant ON free_grants (tenant_id);

-- Which grants fund which reservation, so unused parts go back to the right grant.
CREATE TABLE grant_allocations (
    job_id   text   NOT NULL REFERENCES reservations (job_id),
    grant_id bigint NOT NULL REFERENCES free_grants (id),
    used     numeric(14, 3) NOT NULL,
    micros   bigint NOT NULL,
    PRIMARY KEY (job_id, grant_id)
);

ALTER TABLE reservations ADD COLUMN held_free_micros bigint NOT NULL DEFAULT 0;
ALTER TABLE reservations ADD COLUMN charged_free_micros bigint;
ALTER TABLE reservations ADD COLUMN settled_seconds numeric(10, 3);
ALTER TABLE reservations ADD COLUMN refunded_micros bigint NOT NULL DEFAULT 0;
CREATE INDEX reservations_tenant ON reservations (tenant_id, closed_at);

CREATE TABLE refunds (
    refund_id  text PRIMARY KEY,
    job_id     text   NOT NULL REFERENCES reservations (job_id),
    tenant_id  text   NOT NULL,
    micros     bigint NOT NULL CHECK (micros > 0),
    reason     text   NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Metering: one row per usage.v1.recorded event (deduplicated through the inbox by event id).
CREATE TABLE usage_records (
    event_id             text PRIMARY KEY,
    tenant_id            text    NOT NULL,
    job_id               text    NOT NULL,
    model                text    NOT NULL,
    width                integer NOT NULL,
    height               integer NOT NULL,
    seconds              numeric(10, 3) NOT NULL,
    provider             text    NOT NULL,
    pool                 text    NOT NULL,
    provider_cost_micros bigint  NOT NULL,
    -- 'reported' by the producer, or priced from our provider cost card when it reported none.
    provider_cost_source text    NOT NULL CHECK (provider_cost_source IN ('reported', 'card', 'unknown')),
    charged_micros       bigint  NOT NULL,
    occurred_at          timestamptz NOT NULL,
    recorded_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_records_tenant_time ON usage_records (tenant_id, occurred_at);
CREATE INDEX usage_records_job ON usage_records (job_id);

-- Budget alerts, once per tenant, month and threshold; the gateway's webhooks deliver them.
CREATE TABLE budget_alerts (
    id              bigserial PRIMARY KEY,
    tenant_id       text     NOT NULL,
    period          date     NOT NULL,
    threshold_pct   smallint NOT NULL CHECK (threshold_pct IN (80, 100)),
    spent_micros    bigint   NOT NULL,
    budget_micros   bigint   NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (tenant_id, period, threshold_pct)
);
