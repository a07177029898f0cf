-- The rollup triggers' statements take no parameters, so PL/pgSQL plans each once per
-- connection and keeps that plan until the table's statistics change. Planned while
-- `ledger_transactions` (or `charges`) was small, and with no idea how many transactions a
-- transition table holds, the join became a hash join over a sequential scan of the whole
-- table: every posting statement then read every transaction of every tenant, a cost that
-- grew with history (a third of PostgreSQL's CPU on a hot tenant at 160,000 charges,
-- measured with `perf` under `tally-bench --soak`).
--
-- A statement's new rows are always few next to the table, and each is one primary-key
-- probe: so the functions of the triggers with transition tables plan without hash or
-- merge joins and without sequential scans, whatever the statistics say when they are
-- planned (`tests/api/schema.rs` checks every such function).
ALTER FUNCTION flow_rollups_add() SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off;
ALTER FUNCTION usage_rollups_add_charges() SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off;
ALTER FUNCTION usage_rollups_add_refunds() SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off;
