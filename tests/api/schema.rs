//! The schema stays distributable by tenant (Citus): read from the database catalog, every
//! tenant-owned table has `tenant_id` in its primary key, and every foreign key to tenant
//! data carries `tenant_id` to `tenant_id` (or to `tenants.id`).

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgPool;

use crate::helpers::*;

/// Tables that belong to no tenant, each with why. A new table is either tenant-owned (it
/// has a `tenant_id`, or references a table that does) or must be added here.
const GLOBAL: &[&str] = &[
    // The tenants themselves: distributed by their own id, which every tenant_id references.
    "tenants",
    // Platform credentials (admin side), not a tenant's.
    "service_tokens",
    // The price book: one for every tenant (per-tenant deals are in tenant_pricing).
    "price_rules",
    // Provider webhook events seen, keyed by the provider's event id (deduplication).
    "provider_events",
    // sqlx's record of applied migrations.
    "_sqlx_migrations",
];

/// What is wrong with the schema's distribution by tenant, one line per problem.
async fn violations(pool: &PgPool) -> (BTreeSet<String>, Vec<String>) {
    let tables: Vec<(String, bool, Vec<String>)> = sqlx::query_as(
        "SELECT c.relname::text, \
                EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' \
                        AND NOT a.attisdropped), \
                COALESCE((SELECT array_agg(a.attname::text) FROM pg_constraint k \
                          JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey) \
                          WHERE k.conrelid = c.oid AND k.contype = 'p'), '{}') \
         FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    // (constraint, from table, to table, ["from_col->to_col", ...])
    let fks: Vec<(String, String, String, Vec<String>)> = sqlx::query_as(
        "SELECT k.conname::text, s.relname::text, d.relname::text, \
                ARRAY(SELECT sa.attname::text || '->' || da.attname::text \
                      FROM unnest(k.conkey, k.confkey) AS u(sn, dn) \
                      JOIN pg_attribute sa ON sa.attrelid = k.conrelid AND sa.attnum = u.sn \
                      JOIN pg_attribute da ON da.attrelid = k.confrelid AND da.attnum = u.dn) \
         FROM pg_constraint k JOIN pg_class s ON s.oid = k.conrelid JOIN pg_class d ON d.oid = k.confrelid \
         WHERE k.contype = 'f' AND k.connamespace = 'public'::regnamespace",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let pks: BTreeMap<&str, &Vec<String>> = tables.iter().map(|(t, _, pk)| (t.as_str(), pk)).collect();
    // Tenant-owned: has a tenant_id, or references tenant data (transitively).
    let mut owned: BTreeSet<String> =
        tables.iter().filter(|(t, has, _)| *has && t != "tenants").map(|(t, _, _)| t.clone()).collect();
    loop {
        let more: Vec<String> = fks
            .iter()
            .filter(|(_, from, to, _)| {
                (owned.contains(to) || to == "tenants") && !owned.contains(from) && from != "tenants"
            })
            .map(|(_, from, _, _)| from.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        owned.extend(more);
    }
    let mut bad = Vec::new();
    for t in &owned {
        if !pks.get(t.as_str()).is_some_and(|pk| pk.iter().any(|c| c == "tenant_id")) {
            bad.push(format!("{t}: tenant-owned, but its primary key {:?} lacks tenant_id", pks.get(t.as_str())));
        }
    }
    for (name, from, to, pairs) in &fks {
        let to_tenant_data = owned.contains(to) || to == "tenants";
        let carries = |want: &str| pairs.iter().any(|p| p == want);
        let ok = if to == "tenants" { carries("tenant_id->id") } else { carries("tenant_id->tenant_id") };
        if (owned.contains(from) || to_tenant_data) && !ok {
            bad.push(format!("{from}.{name} -> {to} {pairs:?}: a foreign key to tenant data without tenant_id"));
        }
    }
    let global: BTreeSet<String> = tables.iter().map(|(t, _, _)| t.clone()).filter(|t| !owned.contains(t)).collect();
    (global, bad)
}

#[tokio::test]
async fn every_tenant_table_is_keyed_by_tenant() {
    let app = TestApp::spawn().await;
    let (global, bad) = violations(&app.pool).await;
    assert_eq!(bad, Vec::<String>::new(), "tables not distributable by tenant");
    let listed: BTreeSet<String> = GLOBAL.iter().map(|s| s.to_string()).collect();
    assert_eq!(global, listed, "a table is neither tenant-owned nor in the commented GLOBAL list");

    // The check itself can fail: a tenant table keyed without tenant_id (probe), a foreign
    // key to it without tenant_id (bad_fk), and a table that references a tenant without
    // being keyed by it (bad_owner).
    for sql in [
        "CREATE TABLE probe (tenant_id uuid NOT NULL REFERENCES tenants (id), id uuid PRIMARY KEY)",
        "CREATE TABLE bad_fk (tenant_id uuid NOT NULL, id uuid, probe_id uuid REFERENCES probe (id), \
         PRIMARY KEY (tenant_id, id))",
        "CREATE TABLE bad_owner (id uuid PRIMARY KEY, tenant uuid REFERENCES tenants (id))",
    ] {
        sqlx::query(sql).execute(&app.pool).await.unwrap();
    }
    let (_, bad) = violations(&app.pool).await;
    let text = bad.join("\n");
    for t in [
        "probe: tenant-owned",
        "bad_fk.bad_fk_probe_id_fkey",
        "bad_owner: tenant-owned",
        "bad_owner.bad_owner_tenant_fkey",
    ] {
        assert!(text.contains(t), "{t} not reported in:\n{text}");
    }
}

/// The statement-level triggers that keep the rollups read their transition table and
/// probe other tables by primary key. Their plans are made once per connection, from the
/// statistics of that moment: each must forbid the plans that turn a probe into a scan of
/// a whole table (migration 0013; a hash join over every transaction cost a third of the
/// database's time on a hot tenant).
#[tokio::test]
async fn transition_table_triggers_never_plan_a_scan_of_a_whole_table() {
    let app = TestApp::spawn().await;
    let found: Vec<(String, String, Vec<String>)> = sqlx::query_as(
        "SELECT t.tgname::text, p.proname::text, COALESCE(p.proconfig, '{}') FROM pg_trigger t \
         JOIN pg_proc p ON p.oid = t.tgfoid \
         WHERE NOT t.tgisinternal AND (t.tgnewtable IS NOT NULL OR t.tgoldtable IS NOT NULL)",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(found.len() >= 3, "the rollup triggers: {found:?}");
    for (trigger, function, config) in found {
        for want in ["enable_seqscan=off", "enable_hashjoin=off", "enable_mergejoin=off"] {
            assert!(config.iter().any(|c| c == want), "{trigger} runs {function}() without {want}: {config:?}");
        }
    }
}
