-- Group commit: many concurrent Reserve/Settle/Release calls in one statement, so one transaction and one
-- WAL flush serve them all (services/billing/reelforge_billing/group_commit.py). Each item runs the same
-- fast-path function as a lone call and gets its own status; an item answering 'slow' writes nothing and
-- the store runs it alone afterwards. The caller orders items by tenant, so two batches take the tenants'
-- row locks in the same order and cannot deadlock.

-- Release of a hold paid from credit only (no free grant in it): status 'released' with the amount,
-- 'none' (nothing held: no reservation of this job for this tenant, or already settled or released),
-- 'slow', 'no_account'.
CREATE FUNCTION release_fast(p_tenant text, p_job text, OUT status text, OUT amount bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_available_id text := 'tenant:' || p_tenant || ':available';
    v_reserved_id  text := 'tenant:' || p_tenant || ':reserved';
    v_res reservations%ROWTYPE;
    v_txn bigint;
BEGIN
    PERFORM 1 FROM accounts WHERE id = v_available_id FOR UPDATE;
    IF NOT FOUND THEN
        status := 'no_account'; RETURN;
    END IF;
    SELECT * INTO v_res FROM reservations WHERE job_id = p_job FOR UPDATE;
    IF NOT FOUND OR v_res.tenant_id <> p_tenant OR v_res.state <> 'held' THEN
        status := 'none'; amount := 0; RETURN;
    END IF;
    IF v_res.held_free_micros > 0 THEN
        status := 'slow'; RETURN;
    END IF;
    amount := v_res.held_micros;
    UPDATE reservations SET state = 'released', closed_at = now() WHERE job_id = p_job;
    INSERT INTO ledger_transactions (kind, tenant_id, job_id) VALUES ('release', p_tenant, p_job)
    RETURNING id INTO v_txn;
    IF amount > 0 THEN
        INSERT INTO ledger_entries (transaction_id, account_id, amount)
        VALUES (v_txn, v_reserved_id, -amount), (v_txn, v_available_id, amount);
        UPDATE accounts SET balance = balance - amount WHERE id = v_reserved_id;
        UPDATE accounts SET balance = balance + amount WHERE id = v_available_id;
    END IF;
    status := 'released';
END $$;

-- Item i is (p_kinds[i], p_tenants[i], p_jobs[i], ...); kind is 'reserve', 'settle' or 'release'
-- (model, size and seconds are ignored where the kind has none). One row per item, in item order.
CREATE FUNCTION fast_batch(
    p_kinds text[], p_tenants text[], p_jobs text[], p_models text[], p_widths integer[], p_heights integer[],
    p_seconds numeric[]
) RETURNS TABLE (item integer, status text, amount bigint) LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_kinds, 1), 0) LOOP
        IF p_kinds[i] = 'reserve' THEN
            SELECT * INTO r FROM reserve_fast(p_tenants[i], p_jobs[i], p_models[i], p_widths[i], p_heights[i],
                                              p_seconds[i]);
        ELSIF p_kinds[i] = 'settle' THEN
            SELECT * INTO r FROM settle_fast(p_tenants[i], p_jobs[i], p_seconds[i]);
        ELSIF p_kinds[i] = 'release' THEN
            SELECT * INTO r FROM release_fast(p_tenants[i], p_jobs[i]);
        ELSE
            RAISE EXCEPTION 'unknown batch item kind %', p_kinds[i];
        END IF;
        item := i; status := r.status; amount := r.amount;
        RETURN NEXT;
    END LOOP;
END $$;
