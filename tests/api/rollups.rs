//! The per-tenant rollups (flow_rollups, usage_rollups) after a seeded random mix of
//! charges, refunds, holds (captured, released, expired), top-ups and their refunds,
//! adjustments, gifts and bonus expiry on several tenants over many days, driven over
//! HTTP: they agree exactly with a recomputation from the ledger rows, and the breakdown,
//! the usage views and the runway answer what a full scan of the history answers, for
//! windows that cut days anywhere.

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;
use crate::top_ups::{fast, set_card};

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn money(rng: &mut StdRng, max_cents: i64) -> String {
    Decimal::new(rng.gen_range(1..=max_cents), 2).to_string()
}

fn dec(v: &Value) -> Decimal {
    v.as_str().unwrap_or_else(|| panic!("money string, got {v}")).parse().unwrap()
}

/// Rollup rows that differ from a recomputation over every ledger row, written out here
/// independently of the migration's views.
async fn rollup_mismatches(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "WITH flows AS ( \
           SELECT t.tenant_id, (t.created_at AT TIME ZONE 'UTC')::date AS day, t.kind, sum(e.amount) AS net \
           FROM ledger_transactions t JOIN ledger_entries e ON e.tenant_id = t.tenant_id AND e.transaction_id = t.id \
           WHERE e.account IN ('paid', 'bonus', 'held') GROUP BY t.tenant_id, t.id, t.kind, t.created_at), \
         want AS ( \
           SELECT tenant_id, day, kind, COALESCE(sum(net) FILTER (WHERE net > 0), 0) AS credited, \
                  COALESCE(-sum(net) FILTER (WHERE net < 0), 0) AS debited \
           FROM flows WHERE net <> 0 GROUP BY 1, 2, 3), \
         items AS ( \
           SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date AS day, COALESCE(model, 'amount') AS model, \
                  COALESCE(api_key_id::text, 'none') AS api_key, amount, 1 AS n FROM charges \
           UNION ALL \
           SELECT r.tenant_id, (r.created_at AT TIME ZONE 'UTC')::date, COALESCE(c.model, 'amount'), \
                  COALESCE(c.api_key_id::text, 'none'), -r.amount, 0 \
           FROM refunds r JOIN charges c ON c.tenant_id = r.tenant_id AND c.id = r.charge_id) \
         SELECT 'flow ' || COALESCE(w.tenant_id, r.tenant_id)::text || ' ' || COALESCE(w.day, r.day)::text || ' ' \
                || COALESCE(w.kind, r.kind) || ': want ' || COALESCE(w.credited::text, '-') || '/' \
                || COALESCE(w.debited::text, '-') || ' got ' || COALESCE(r.credited::text, '-') || '/' \
                || COALESCE(r.debited::text, '-') \
         FROM want w FULL JOIN flow_rollups r USING (tenant_id, day, kind) \
         WHERE (w.credited, w.debited) IS DISTINCT FROM (r.credited, r.debited) \
         UNION ALL \
         SELECT 'usage ' || COALESCE(w.tenant_id, r.tenant_id)::text || ' ' || COALESCE(w.dim, r.dim) || ' ' \
                || COALESCE(w.day, r.day)::text || ' ' || COALESCE(w.key, r.key) || ': want ' \
                || COALESCE(w.amount::text, '-') || ' x' || COALESCE(w.n::text, '-') || ' got ' \
                || COALESCE(r.amount::text, '-') || ' x' || COALESCE(r.charges::text, '-') \
         FROM (SELECT tenant_id, 'model' AS dim, day, model AS key, sum(amount) AS amount, sum(n) AS n FROM items \
               GROUP BY 1, 2, 3, 4 \
               UNION ALL \
               SELECT tenant_id, 'api_key', day, api_key, sum(amount), sum(n) FROM items GROUP BY 1, 2, 3, 4) w \
         FULL JOIN usage_rollups r USING (tenant_id, dim, day, key) \
         WHERE (w.amount, w.n) IS DISTINCT FROM (r.amount, r.charges)",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// The usage view as the service answered it before rollups: a scan of every charge and
/// refund in the window.
async fn usage_by_scan(
    app: &TestApp,
    t: Uuid,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    group: &str,
) -> Value {
    let rows: Vec<(String, Decimal, i64)> = sqlx::query_as(
        "WITH items AS ( \
           SELECT c.created_at AS at, c.model, c.api_key_id, c.amount, 1 AS n FROM charges c \
           WHERE c.tenant_id = $1 AND ($2::timestamptz IS NULL OR c.created_at >= $2) \
             AND ($3::timestamptz IS NULL OR c.created_at < $3) \
           UNION ALL \
           SELECT r.created_at, c.model, c.api_key_id, -r.amount, 0 FROM refunds r \
           JOIN charges c ON c.tenant_id = r.tenant_id AND c.id = r.charge_id \
           WHERE r.tenant_id = $1 AND ($2::timestamptz IS NULL OR r.created_at >= $2) \
             AND ($3::timestamptz IS NULL OR r.created_at < $3)) \
         SELECT key, sum(amount), sum(n)::int8 FROM ( \
           SELECT CASE $4 WHEN 'day' THEN to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD') \
                          WHEN 'model' THEN COALESCE(model, 'amount') \
                          ELSE COALESCE(api_key_id::text, 'none') END AS key, amount, n FROM items) x \
         GROUP BY key ORDER BY key",
    )
    .bind(t)
    .bind(from)
    .bind(to)
    .bind(group)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    json!(rows.into_iter().map(|(k, a, n)| json!([k, a.normalize().to_string(), n])).collect::<Vec<_>>())
}

/// The breakdown as a full scan answers it: per kind, (credited, debited).
async fn breakdown_by_scan(app: &TestApp, t: Uuid, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Value {
    let rows: Vec<(String, Decimal, Decimal)> = sqlx::query_as(
        "WITH flows AS ( \
           SELECT t.kind, sum(e.amount) AS net FROM ledger_transactions t \
           JOIN ledger_entries e ON e.tenant_id = t.tenant_id AND e.transaction_id = t.id \
           WHERE t.tenant_id = $1 AND e.account IN ('paid', 'bonus', 'held') \
             AND ($2::timestamptz IS NULL OR t.created_at >= $2) AND ($3::timestamptz IS NULL OR t.created_at < $3) \
           GROUP BY t.id, t.kind) \
         SELECT kind, COALESCE(sum(net) FILTER (WHERE net > 0), 0), COALESCE(-sum(net) FILTER (WHERE net < 0), 0) \
         FROM flows GROUP BY kind",
    )
    .bind(t)
    .bind(from)
    .bind(to)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut out = serde_json::Map::new();
    for (kind, c, d) in rows {
        let (c, d) = (c.normalize(), d.normalize());
        let debit_name = match kind.as_str() {
            "expiry" => "expired",
            k => k,
        };
        if !c.is_zero() {
            out.insert(format!("credited.{kind}"), json!(c.to_string()));
        }
        if !d.is_zero() {
            out.insert(format!("debited.{debit_name}"), json!(d.to_string()));
        }
    }
    Value::Object(out)
}

/// The service's breakdown answer in the same shape (non-zero fields only) and its total.
fn breakdown_fields(b: &Value) -> (Value, Decimal) {
    let mut out = serde_json::Map::new();
    for side in ["credited", "debited"] {
        for (k, v) in b[side].as_object().unwrap() {
            let d = dec(v).normalize();
            if !d.is_zero() {
                out.insert(format!("{side}.{k}"), json!(d.to_string()));
            }
        }
    }
    (Value::Object(out), dec(&b["total"]))
}

fn usage_rows(u: &Value) -> Value {
    json!(u["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!([r["key"], dec(&r["amount"]).normalize().to_string(), r["count"]]))
        .collect::<Vec<_>>())
}

struct Tenant {
    id: Uuid,
    keys: Vec<Uuid>,
    charges: Vec<Uuid>,
    holds: Vec<Uuid>,
    top_ups: Vec<Uuid>,
}

#[tokio::test]
async fn rollups_match_the_ledger_after_a_random_mix() {
    let seed: u64 = std::env::var("ROLLUP_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x7a11);
    let mut rng = StdRng::seed_from_u64(seed);
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.top_up_bonus_percent = "10".parse().unwrap();
        c.top_up_bonus_expires_days = Some(2);
        c.top_up_whole_dollars = false;
    })
    .await;
    let mut now = at("2030-03-01T21:30:00Z");
    app.state.clock.set(now);
    let mut tenants = Vec::new();
    for i in 0..3 {
        let id = app.create_tenant(&format!("t{i}")).await;
        set_card(&app, id, "pm_mock_ok").await.assert(200);
        let keys = vec![app.tenant_key(id).await.0, app.tenant_key(id).await.0];
        tenants.push(Tenant { id, keys, charges: vec![], holds: vec![], top_ups: vec![] });
    }
    let models = ["gpt-4o-mini", "gpt-4o"];
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for step in 0..260 {
        // Time moves on by up to 5 hours a step: many days, and midnights crossed often.
        if rng.gen_bool(0.5) {
            now += Duration::seconds(rng.gen_range(1..5 * 3600));
            app.state.clock.set(now);
        }
        let t = &mut tenants[rng.gen_range(0..3)];
        let key = format!("s{step}");
        let api_key = if rng.gen_bool(0.7) { Some(t.keys[rng.gen_range(0..2)]) } else { None };
        let (what, r) = match rng.gen_range(0..100) {
            0..=9 => {
                let r = app
                    .post_idem(
                        &format!("/v1/tenants/{}/top-ups", t.id),
                        ADMIN,
                        &key,
                        json!({ "amount": money(&mut rng, 3000) }),
                    )
                    .await;
                if r.status == 201 {
                    t.top_ups.push(r.id());
                }
                ("top_up", r)
            }
            10..=39 => {
                let body = if rng.gen_bool(0.5) {
                    let usage =
                        json!({ "input_tokens": rng.gen_range(0..200_000), "output_tokens": rng.gen_range(0..50_000) });
                    json!({ "tenant_id": t.id, "model": models[rng.gen_range(0..2)], "usage": usage, "api_key_id": api_key })
                } else {
                    json!({ "tenant_id": t.id, "amount": money(&mut rng, 300), "api_key_id": api_key })
                };
                let r = app.post_idem("/v1/charges", ADMIN, &key, body).await;
                if r.status == 201 {
                    t.charges.push(r.id());
                }
                ("charge", r)
            }
            40..=51 if !t.charges.is_empty() => {
                let c = t.charges[rng.gen_range(0..t.charges.len())];
                let body = if rng.gen_bool(0.5) {
                    json!({ "reason": "partial", "amount": money(&mut rng, 100) })
                } else {
                    json!({ "reason": "whole" })
                };
                ("refund", app.post_idem(&format!("/v1/charges/{c}/refunds"), ADMIN, &key, body).await)
            }
            52..=63 => {
                let body = json!({ "tenant_id": t.id, "amount": money(&mut rng, 500), "api_key_id": api_key,
                                   "expires_in_seconds": rng.gen_range(60..20_000) });
                let r = app.post_idem("/v1/holds", ADMIN, &key, body).await;
                if r.status == 201 {
                    t.holds.push(r.id());
                }
                ("hold", r)
            }
            64..=75 if !t.holds.is_empty() => {
                let h = t.holds.swap_remove(rng.gen_range(0..t.holds.len()));
                if rng.gen_bool(0.6) {
                    let body = if rng.gen_bool(0.5) { json!({ "amount": money(&mut rng, 200) }) } else { json!({}) };
                    let r = app.post_idem(&format!("/v1/holds/{h}/capture"), ADMIN, &key, body).await;
                    if r.status == 201 {
                        t.charges.push(r.id());
                    }
                    ("capture", r)
                } else {
                    ("release", app.post(&format!("/v1/holds/{h}/release"), ADMIN, json!({})).await)
                }
            }
            76..=87 => {
                let (kind, amount) = match rng.gen_range(0..4) {
                    0 => ("adjustment", format!("-{}", money(&mut rng, 500))),
                    1 => ("adjustment", money(&mut rng, 2000)),
                    2 => ("gift", money(&mut rng, 1000)),
                    _ => ("compensation", money(&mut rng, 500)),
                };
                let expiry = (kind != "adjustment" && rng.gen_bool(0.7))
                    .then(|| (now + Duration::seconds(rng.gen_range(600..3 * 86_400))).to_rfc3339());
                let body = json!({ "amount": amount, "kind": kind, "reason": "mix", "expires_at": expiry });
                ("adjust", app.post_idem(&format!("/v1/admin/tenants/{}/adjustments", t.id), ADMIN, &key, body).await)
            }
            88..=93 if !t.top_ups.is_empty() => {
                let u = t.top_ups[rng.gen_range(0..t.top_ups.len())];
                let body = if rng.gen_bool(0.5) {
                    json!({ "reason": "partial", "amount": money(&mut rng, 500) })
                } else {
                    json!({ "reason": "whole" })
                };
                (
                    "top_up_refund",
                    app.post_idem(&format!("/v1/tenants/{}/top-ups/{u}/refunds", t.id), ADMIN, &key, body).await,
                )
            }
            _ => continue,
        };
        assert!(r.status.as_u16() < 500, "{what}: {} {}", r.status, r.text);
        *statuses.entry(format!("{what} {}", r.status.as_u16())).or_default() += 1;
        if step % 40 == 39 {
            // Let the workers catch up with the clock: holds and bonus lots past their expiry.
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
    // Past every expiry: the workers expire what is left, by the same clock.
    now += Duration::days(8);
    app.state.clock.set(now);
    for _ in 0..100 {
        let left: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM holds WHERE status = 'active') \
                  + (SELECT count(*) FROM bonus_lots WHERE remaining > 0 AND expires_at <= $1)",
        )
        .bind(now)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The mix really was mixed: every kind of movement happened and was counted.
    let kinds: Vec<String> = sqlx::query_scalar("SELECT DISTINCT kind FROM ledger_transactions ORDER BY kind")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    for k in [
        "adjustment",
        "compensation",
        "expiry",
        "gift",
        "hold",
        "hold_release",
        "refund",
        "top_up",
        "top_up_refund",
        "usage",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} in the mix ({kinds:?}; {statuses:?})");
    }
    let days: i64 = sqlx::query_scalar("SELECT count(DISTINCT day) FROM usage_rollups WHERE dim = 'model'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(days >= 10, "{days} days of usage");

    assert_eq!(rollup_mismatches(&app).await, Vec::<String>::new(), "seed {seed}: rollups vs the ledger");
    app.assert_ledger_ok().await;

    // The reads answer what a full scan answers, for windows cutting days anywhere.
    let start = at("2030-03-01T00:00:00Z");
    let mut windows: Vec<(Option<DateTime<Utc>>, Option<DateTime<Utc>>)> = vec![
        (None, None),
        (Some(start + Duration::days(2)), Some(start + Duration::days(5))),
        (Some(start + Duration::hours(30)), None),
        (None, Some(start + Duration::hours(100))),
    ];
    for _ in 0..8 {
        let f = start + Duration::seconds(rng.gen_range(0..20 * 86_400));
        windows.push((Some(f), Some(f + Duration::seconds(rng.gen_range(1..6 * 86_400)))));
    }
    for t in &tenants {
        for (from, to) in &windows {
            let mut q = vec![];
            if let Some(f) = from {
                q.push(format!("from={}", f.to_rfc3339().replace('+', "%2B")));
            }
            if let Some(x) = to {
                q.push(format!("to={}", x.to_rfc3339().replace('+', "%2B")));
            }
            let q = q.join("&");
            for group in ["day", "model", "api_key"] {
                let r = app.get(&format!("/v1/tenants/{}/usage?group_by={group}&{q}", t.id), ADMIN).await;
                r.assert(200);
                assert_eq!(
                    usage_rows(&r.body),
                    usage_by_scan(&app, t.id, *from, *to, group).await,
                    "usage by {group} {q}"
                );
            }
            let r = app.get(&format!("/v1/tenants/{}/balance/breakdown?{q}", t.id), ADMIN).await;
            r.assert(200);
            let want = breakdown_by_scan(&app, t.id, *from, *to).await;
            let (got, total) = breakdown_fields(&r.body);
            assert_eq!(got, want, "breakdown {q}");
            let credited: Decimal = r.body["credited"].as_object().unwrap().values().map(dec).sum();
            let debited: Decimal = r.body["debited"].as_object().unwrap().values().map(dec).sum();
            assert_eq!(total, credited - debited);
        }
    }
    // The runway at several instants: the last 7 days' net usage, as a scan finds it.
    for back in [0, 3, 9, 14] {
        let when = now - Duration::days(back) - Duration::seconds(rng.gen_range(0..86_400));
        app.state.clock.set(when);
        for t in &tenants {
            let b = app.balance(t.id).await;
            let net: Decimal = sqlx::query_scalar(
                "SELECT COALESCE((SELECT sum(amount) FROM charges WHERE tenant_id = $1 AND created_at > $2 AND created_at <= $3), 0) \
                      - COALESCE((SELECT sum(amount) FROM refunds WHERE tenant_id = $1 AND created_at > $2 AND created_at <= $3), 0)",
            )
            .bind(t.id)
            .bind(when - Duration::days(7))
            .bind(when)
            .fetch_one(&app.pool)
            .await
            .unwrap();
            let want = tally::services::accounts::runway::runway(
                b["available"].as_str().unwrap().parse().unwrap(),
                tally::money::Money::from_db(net),
            );
            assert_eq!(b["runway"], serde_json::to_value(&want).unwrap(), "runway at {when}");
        }
    }
}

#[tokio::test]
async fn the_ledger_check_reports_a_drifted_rollup() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "5").await;
    app.charge(t, "1.25").await.assert(201);
    app.assert_ledger_ok().await;
    sqlx::query("UPDATE usage_rollups SET amount = amount + 0.01 WHERE tenant_id = $1")
        .bind(t)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM flow_rollups WHERE tenant_id = $1 AND kind = 'adjustment'")
        .bind(t)
        .execute(&app.pool)
        .await
        .unwrap();
    let r = app.get("/v1/admin/ledger/check", ADMIN).await;
    r.assert(200);
    assert_eq!(r.body["ok"], false);
    let v = r.body["violations"].to_string();
    assert!(v.contains("usage rollup differs") && v.contains("1.26"), "{v}");
    assert!(v.contains("flow rollup differs") && v.contains("adjustment"), "{v}");
}
