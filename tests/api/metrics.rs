//! `/metrics` counts what ops alert on: a charge, a refusal, a top-up and a webhook
//! delivery each show up, and every metric has its `# HELP`.
//!
//! The recorder is process-wide and tests run in parallel, so each figure is compared
//! with the same scrape taken before this test's requests: it must have grown.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;
use crate::top_ups::{fast, set_card, top_up, wait_until};
use crate::webhooks::receiver;

async fn scrape(app: &TestApp) -> String {
    let r = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// The sum of `name`'s samples that carry every one of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            let wanted = n == name && labels.iter().all(|(k, want)| rest.contains(&format!("{k}=\"{want}\"")));
            wanted.then(|| v.parse::<f64>().ok())?
        })
        .sum()
}

#[tokio::test]
async fn a_charge_a_refusal_a_top_up_and_a_webhook_delivery_are_each_counted() {
    let app = TestApp::spawn_with(fast).await;
    let before = scrape(&app).await;
    let t = app.create_tenant("metered").await;
    let (url, rx) = receiver(0).await;
    app.put(&format!("/v1/tenants/{t}/webhook"), ADMIN, json!({ "url": url })).await.assert(200);
    set_card(&app, t, "pm_mock_ok").await.assert(200);
    top_up(&app, t, &Uuid::now_v7().to_string(), "10").await.assert(201);
    let key = Uuid::now_v7().to_string();
    let charge = json!({ "tenant_id": t, "amount": "1.00" });
    app.post_idem("/v1/charges", ADMIN, &key, charge.clone()).await.assert(201);
    app.post_idem("/v1/charges", ADMIN, &key, charge).await.assert(201);
    app.charge(t, "500.00").await.assert_error(402, "insufficient_funds");
    wait_until("the webhook delivered", Duration::from_secs(10), || async {
        rx.got.lock().unwrap().iter().any(|(_, _, s)| *s == 204)
    })
    .await;
    // The worker counts a delivery once the receiver's answer is in: poll for it.
    let delivered = |text: &str| value(text, "tally_webhook_deliveries_total", &[("outcome", "delivered")]);
    let mut after = scrape(&app).await;
    for _ in 0..200 {
        if delivered(&after) > delivered(&before) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        after = scrape(&app).await;
    }

    let grew = |name: &str, labels: &[(&str, &str)]| {
        let (b, a) = (value(&before, name, labels), value(&after, name, labels));
        assert!(a > b, "{name}{labels:?} did not grow ({b} -> {a}):\n{after}");
    };
    grew("tally_charges_total", &[("outcome", "accepted"), ("code", "none")]);
    grew("tally_charges_total", &[("outcome", "replayed")]);
    grew("tally_charges_total", &[("outcome", "refused"), ("code", "insufficient_funds")]);
    grew("tally_idempotent_replays_total", &[]);
    grew("tally_charge_batch_size_count", &[]);
    grew("tally_ledger_postings_total", &[("kind", "usage")]);
    grew("tally_ledger_postings_total", &[("kind", "top_up")]);
    grew("tally_top_up_attempts_total", &[("source", "manual"), ("outcome", "succeeded")]);
    grew("tally_payment_provider_duration_seconds_count", &[("outcome", "succeeded")]);
    grew("tally_webhook_deliveries_total", &[("outcome", "delivered")]);
    grew("tally_webhook_delivery_lag_seconds_count", &[]);
    grew("http_requests_total", &[("route", "/v1/charges"), ("status", "402")]);
    for gauge in ["tally_outbox_backlog", "tally_outbox_oldest_pending_age_seconds", "db_pool_max_connections"] {
        assert!(after.lines().any(|l| l.starts_with(gauge)), "{gauge} missing:\n{after}");
    }

    // Every metric family says what it is.
    let families: Vec<&str> = after.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    assert!(families.len() >= 15, "{families:?}");
    for f in families {
        assert!(after.contains(&format!("# HELP {f} ")), "{f} has no # HELP:\n{after}");
    }
}
