-- Reserve and Settle in one statement each (one round trip, the tenant's row lock taken once) for the
-- common case: a tenant paying from credit, with no live free grant and no monthly budget. Anything
-- else answers 'slow' before writing, and the store runs the general multi-statement path, which
-- follows the same lock order (the tenant's `available` account first).
--
-- Results: status 'held' / 'settled' with the amount; 'slow'; 'no_account' (create the accounts first);
-- 'unknown' (no reservation of this job for this tenant); 'released'; 'no_rate'; 'insufficient' with
-- the room the tenant had (available plus credit limit).

CREATE FUNCTION reserve_fast(
    p_tenant text, p_job text, p_model text, p_width integer, p_height integer, p_seconds numeric,
    OUT status text, OUT amount bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_available_id text := 'tenant:' || p_tenant || ':available';
    v_reserved_id  text := 'tenant:' || p_tenant || ':reserved';
    v_balance bigint;
    v_plan text;
    v_mode text;
    v_limit bigint;
    v_budget bigint;
    v_rate bigint;
    v_owner text;
    v_txn bigint;
BEGIN
    SELECT balance INTO v_balance FROM accounts WHERE id = v_available_id FOR UPDATE;
    IF NOT FOUND THEN
        status := 'no_account'; RETURN;
    END IF;
    SELECT tenant_id, held_micros INTO v_owner, amount FROM reservations WHERE job_id = p_job;
    IF FOUND THEN
        status := CASE WHEN v_owner = p_tenant THEN 'held' ELSE 'unknown' END; RETURN;
    END IF;
    SELECT coalesce(plan_id, 'default'), coalesce(mode, 'prepaid'), coalesce(credit_limit_micros, 0),
           monthly_budget_micros
      INTO v_plan, v_mode, v_limit, v_budget
      FROM (SELECT 1) one LEFT JOIN billing_profiles ON tenant_id = p_tenant;
    IF v_budget IS NOT NULL OR EXISTS (
        SELECT 1 FROM free_grants
        WHERE tenant_id = p_tenant AND remaining > 0 AND (expires_at IS NULL OR expires_at > now())
    ) THEN
        status := 'slow'; RETURN;
    END IF;
    -- The same choice as pricing.pick_rate over the store's price rules: per tier the tenant's override
    -- wins over its plan and the newest rule in effect wins; then the smallest tier that fits.
    SELECT micros_per_second INTO v_rate FROM (
        SELECT DISTINCT ON (max_pixels) max_pixels, micros_per_second
        FROM price_rules
        WHERE model = p_model AND effective_from <= now()
          AND (tenant_id = p_tenant OR (tenant_id IS NULL AND plan_id = v_plan))
        ORDER BY max_pixels, (tenant_id IS NOT NULL) DESC, effective_from DESC, id DESC
    ) tiers
    WHERE max_pixels >= p_width::bigint * p_height
    ORDER BY max_pixels LIMIT 1;
    IF NOT FOUND THEN
        status := 'no_rate'; amount := NULL; RETURN;
    END IF;
    amount := ceil(v_rate * p_seconds)::bigint;
    IF v_mode <> 'postpaid' THEN
        v_limit := 0;
    END IF;
    IF v_balance - amount < -v_limit THEN
        status := 'insufficient'; amount := v_balance + v_limit; RETURN;
    END IF;
    INSERT INTO reservations (job_id, tenant_id, model, width, height, seconds, micros_per_second,
                              held_micros, held_free_micros, state)
    VALUES (p_job, p_tenant, p_model, p_width, p_height, p_seconds, v_rate, amount, 0, 'held');
    INSERT INTO ledger_transactions (kind, tenant_id, job_id) VALUES ('reserve', p_tenant, p_job)
    RETURNING id INTO v_txn;
    IF amount > 0 THEN
        INSERT INTO ledger_entries (transaction_id, account_id, amount)
        VALUES (v_txn, v_available_id, -amount), (v_txn, v_reserved_id, amount);
        UPDATE accounts SET balance = balance - amount WHERE id = v_available_id;
        UPDATE accounts SET balance = balance + amount WHERE id = v_reserved_id;
    END IF;
    status := 'held';
END $$;

CREATE FUNCTION settle_fast(
    p_tenant text, p_job text, p_seconds numeric, OUT status text, OUT amount bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_available_id text := 'tenant:' || p_tenant || ':available';
    v_reserved_id  text := 'tenant:' || p_tenant || ':reserved';
    v_res reservations%ROWTYPE;
    v_budget bigint;
    v_txn bigint;
BEGIN
    PERFORM 1 FROM accounts WHERE id = v_available_id FOR UPDATE;
    IF NOT FOUND THEN
        status := 'no_account'; RETURN;
    END IF;
    SELECT * INTO v_res FROM reservations WHERE job_id = p_job FOR UPDATE;
    IF NOT FOUND OR v_res.tenant_id <> p_tenant THEN
        status := 'unknown'; RETURN;
    END IF;
    IF v_res.state = 'settled' THEN
        status := 'settled'; amount := v_res.charged_micros; RETURN;
    END IF;
    IF v_res.state = 'released' THEN
        status := 'released'; RETURN;
    END IF;
    SELECT monthly_budget_micros INTO v_budget FROM billing_profiles WHERE tenant_id = p_tenant;
    IF v_res.held_free_micros > 0 OR v_budget IS NOT NULL THEN
        status := 'slow'; RETURN;
    END IF;
    amount := least(ceil(v_res.micros_per_second * p_seconds)::bigint, v_res.held_micros);
    UPDATE reservations SET state = 'settled', charged_micros = amount, charged_free_micros = 0,
                            settled_seconds = p_seconds, closed_at = now()
    WHERE job_id = p_job;
    INSERT INTO ledger_transactions (kind, tenant_id, job_id) VALUES ('settle', p_tenant, p_job)
    RETURNING id INTO v_txn;
    IF v_res.held_micros > 0 THEN
        INSERT INTO ledger_entries (transaction_id, account_id, amount)
        SELECT v_txn, account, e.amount FROM (VALUES
            (v_reserved_id, -v_res.held_micros),
            ('platform:revenue', amount),
            (v_available_id, v_res.held_micros - amount)
        ) AS e(account, amount) WHERE e.amount <> 0;
        UPDATE accounts SET balance = balance - v_res.held_micros WHERE id = v_reserved_id;
        UPDATE accounts SET balance = balance + (v_res.held_micros - amount) WHERE id = v_available_id;
    END IF;
    status := 'settled';
END $$;

-- Prepaid credit is idempotent by its payment reference (AddCredit).
CREATE UNIQUE INDEX ledger_transactions_grant_once ON ledger_transactions (ref) WHERE kind = 'grant';
