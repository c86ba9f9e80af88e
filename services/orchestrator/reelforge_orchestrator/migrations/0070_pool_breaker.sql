-- Each pool's own circuit-breaker policy (admin SetPoolBreaker). NULL: the orchestrator's process
-- default (settings CIRCUIT_*). The bounds are the admin API's; min_calls <= window is checked there
-- against the effective policy, since either side may be a process default.
ALTER TABLE capacity_pools
    ADD COLUMN circuit_window           integer          CHECK (circuit_window BETWEEN 1 AND 10000),
    ADD COLUMN circuit_min_calls        integer          CHECK (circuit_min_calls BETWEEN 1 AND 10000),
    ADD COLUMN circuit_error_rate       double precision CHECK (circuit_error_rate > 0 AND circuit_error_rate <= 1),
    ADD COLUMN circuit_open_seconds     double precision CHECK (circuit_open_seconds > 0
                                                                AND circuit_open_seconds <= 86400),
    ADD COLUMN circuit_half_open_probes integer          CHECK (circuit_half_open_probes BETWEEN 1 AND 1000),
    ADD CONSTRAINT circuit_min_calls_within_window
        CHECK (circuit_min_calls IS NULL OR circuit_window IS NULL OR circuit_min_calls <= circuit_window);
