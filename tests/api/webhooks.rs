//! Events and webhooks: the outbox feed, Standard Webhooks signatures checked by an
//! independent verifier written here from the spec, redelivery with the same id, URL rules.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;

use crate::helpers::*;
use crate::top_ups::{count_type, events_of, fast, set_card, top_up, wait_until};

/// The Standard Webhooks verification, from the spec: the signed content is
/// `{webhook-id}.{webhook-timestamp}.{body}`, the key is the base64 part of `whsec_…`,
/// `webhook-signature` is a space-separated list of `v1,<base64 HMAC-SHA256>`, and the
/// timestamp must be within five minutes of now.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).ok_or(format!("missing {name}"));
    let (id, ts, sigs) = (get("webhook-id")?, get("webhook-timestamp")?, get("webhook-signature")?);
    let ts: i64 = ts.parse().map_err(|_| "bad timestamp".to_string())?;
    if (now - ts).abs() > 300 {
        return Err("timestamp outside the tolerance".into());
    }
    let key = B64.decode(secret.strip_prefix("whsec_").ok_or("not a whsec_ secret")?).map_err(|e| e.to_string())?;
    for sig in sigs.split(' ') {
        let Some(("v1", b64)) = sig.split_once(',') else { continue };
        let Ok(expected) = B64.decode(b64) else { continue };
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        if mac.verify_slice(&expected).is_ok() {
            return Ok(());
        }
    }
    Err("no matching signature".into())
}

#[derive(Clone, Default)]
pub struct Receiver {
    /// Requests to answer with 500 before answering 200.
    fail_first: Arc<Mutex<usize>>,
    pub got: Arc<Mutex<Vec<(HeaderMap, Bytes, u16)>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = {
        let mut left = r.fail_first.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::NO_CONTENT
        }
    };
    r.got.lock().unwrap().push((headers, body, status.as_u16()));
    status
}

/// A webhook receiver on 127.0.0.1 that fails its first `fail_first` requests.
pub async fn receiver(fail_first: usize) -> (String, Receiver) {
    let r = Receiver { fail_first: Arc::new(Mutex::new(fail_first)), got: Default::default() };
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, r)
}

#[tokio::test]
async fn deliveries_are_signed_retried_with_the_same_id_and_verify_independently() {
    let app = TestApp::spawn_with(fast).await;
    let t = app.create_tenant("a").await;
    let (url, rx) = receiver(2).await;
    let hook = app.put(&format!("/v1/tenants/{t}/webhook"), ADMIN, json!({ "url": url })).await;
    hook.assert(200);
    let secret = hook.str("secret");
    assert!(secret.starts_with("whsec_"));
    let all = tally::services::notify::events::EventType::ALL;
    assert_eq!(hook.body["events"].as_array().unwrap().len(), all.len(), "all event types by default");
    assert!(hook.body["events"].as_array().unwrap().contains(&json!("spend_limit.reached")));
    assert!(hook.body["events"].as_array().unwrap().contains(&json!("payment.reversed")));

    set_card(&app, t, "pm_mock_ok").await.assert(200);
    top_up(&app, t, "k", "10").await.assert(201);
    wait_until("a successful delivery", Duration::from_secs(5), || async {
        rx.got.lock().unwrap().iter().any(|(_, _, s)| *s == 204)
    })
    .await;

    let events = events_of(&app, t).await;
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event["type"], "top_up.succeeded");
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "failed twice, then delivered");
    let now = chrono::Utc::now().timestamp();
    for (headers, body, _) in &got {
        assert_eq!(headers["webhook-id"], event["id"].as_str().unwrap(), "the same webhook-id on every attempt");
        verify(&secret, headers, body, now).expect("a genuine delivery verifies");
        let payload: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(&payload, event, "the body is the event as the feed lists it");
        assert_eq!(payload["tenant_id"], t.to_string());
        assert_eq!(payload["data"]["amount"], "10.00");
    }

    // Tampering is caught by the verifier.
    let (headers, body, _) = &got[2];
    let mut forged = body.to_vec();
    forged.extend_from_slice(b" ");
    assert!(verify(&secret, headers, &forged, now).is_err(), "a changed body");
    let mut bad_sig = headers.clone();
    let sig = headers["webhook-signature"].to_str().unwrap().replace("v1,", "v1,A");
    bad_sig.insert("webhook-signature", sig.parse().unwrap());
    assert!(verify(&secret, &bad_sig, body, now).is_err(), "a changed signature");
    let mut old = headers.clone();
    old.insert("webhook-timestamp", (now - 3600).to_string().parse().unwrap());
    assert!(verify(&secret, &old, body, now).is_err(), "a replayed old timestamp");
    let other_secret = app.put(&format!("/v1/tenants/{t}/webhook"), ADMIN, json!({ "url": url })).await.str("secret");
    assert_ne!(other_secret, secret, "a new secret each time");
    assert!(verify(&other_secret, headers, body, now).is_err(), "another secret");

    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM webhook_deliveries WHERE tenant_id = $1")
            .bind(t)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts), ("delivered", 3));
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn webhook_urls_are_checked_and_event_filters_apply() {
    let strict = TestApp::spawn().await;
    let t = strict.create_tenant("a").await;
    let path = format!("/v1/tenants/{t}/webhook");
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.0.0.5/x",
        "http://[::1]/x",
        "ftp://8.8.8.8/x",
        "nope",
    ] {
        strict.put(&path, ADMIN, json!({ "url": url })).await.assert_error(400, "invalid_request");
    }
    strict
        .put(&path, ADMIN, json!({ "url": "https://8.8.8.8/hook", "events": ["nope"] }))
        .await
        .assert_error(400, "invalid_request");
    strict
        .put(&path, ADMIN, json!({ "url": "https://8.8.8.8/hook", "events": [] }))
        .await
        .assert_error(400, "invalid_request");
    strict
        .put(&path, ADMIN, json!({ "url": "https://8.8.8.8/hook", "secret": "x" }))
        .await
        .assert_error(400, "invalid_request");
    let ok = strict.put(&path, ADMIN, json!({ "url": "https://8.8.8.8/hook", "events": ["top_up.failed"] })).await;
    ok.assert(200);
    assert_eq!(ok.body["events"], json!(["top_up.failed"]));
    let service = strict.service_token().await;
    strict.put(&path, &service, json!({ "url": "https://8.8.8.8/hook" })).await.assert_error(403, "forbidden");
    strict
        .put(&format!("/v1/tenants/{}/webhook", Uuid::now_v7()), ADMIN, json!({ "url": "https://8.8.8.8/hook" }))
        .await
        .assert_error(404, "not_found");

    let app = TestApp::spawn_with(fast).await;
    let t = app.create_tenant("a").await;
    let (url, rx) = receiver(0).await;
    app.put(&format!("/v1/tenants/{t}/webhook"), ADMIN, json!({ "url": url, "events": ["top_up.failed"] }))
        .await
        .assert(200);
    set_card(&app, t, "pm_mock_ok").await.assert(200);
    top_up(&app, t, "ok", "10").await.assert(201);
    set_card(&app, t, "pm_mock_declined").await.assert(200);
    top_up(&app, t, "no", "10").await.assert_error(402, "payment_declined");
    wait_until("the filtered delivery", Duration::from_secs(5), || async { !rx.got.lock().unwrap().is_empty() }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "only the subscribed type is sent");
    let payload: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(payload["type"], "top_up.failed");
    assert_eq!(events_of(&app, t).await.len(), 2, "the feed records every event");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn balance_hold_and_credit_events_are_recorded_once_each() {
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.credits_expiring_notice = Duration::from_secs(86_400);
    })
    .await;
    let t = app.create_tenant("a").await;
    app.fund(t, "20").await;
    app.put(
        &format!("/v1/tenants/{t}/auto-top-up"),
        ADMIN,
        json!({ "enabled": false, "threshold": "10", "amount": "20" }),
    )
    .await
    .assert(200);
    for amount in ["5", "6", "1", "8"] {
        app.charge(t, amount).await.assert(201);
    }
    let events = events_of(&app, t).await;
    assert_eq!(count_type(&events, "balance.low"), 1, "15 → 9 crosses 10 once");
    let low = events.iter().find(|e| e["type"] == "balance.low").unwrap();
    assert_eq!(
        low["data"],
        json!({ "available": "9.00", "threshold": "10.00", "auto_top_up_enabled": false, "currency": "USD" })
    );
    assert_eq!(count_type(&events, "balance.depleted"), 1, "8 → 0");

    app.fund(t, "5").await;
    let hold =
        app.post_idem("/v1/holds", ADMIN, "h", json!({ "tenant_id": t, "amount": "2", "expires_in_seconds": 1 })).await;
    hold.assert(201);
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    app.gift(t, "3", Some(soon)).await;
    wait_until("hold and credit expiry", Duration::from_secs(8), || async {
        let e = events_of(&app, t).await;
        count_type(&e, "hold.expired") == 1 && count_type(&e, "credits.expired") == 1
    })
    .await;
    let events = events_of(&app, t).await;
    assert_eq!(count_type(&events, "credits.expiring"), 1);
    let expired = events.iter().find(|e| e["type"] == "credits.expired").unwrap();
    assert_eq!(expired["data"]["amount"], "3.00");
    let held = events.iter().find(|e| e["type"] == "hold.expired").unwrap();
    assert_eq!(held["data"]["hold_id"], hold.body["id"]);
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "newest first");
    let page = app.get(&format!("/v1/tenants/{t}/events?limit=2"), ADMIN).await;
    let cursor = page.body["next_cursor"].as_str().unwrap().to_string();
    let next = app.get(&format!("/v1/tenants/{t}/events?limit=2&cursor={cursor}"), ADMIN).await;
    assert_eq!(next.body["data"][0]["id"].as_str(), Some(ids[2]));
    let other = app.create_tenant("b").await;
    let (_, other_key) = app.tenant_key(other).await;
    app.get(&format!("/v1/tenants/{t}/events"), &other_key).await.assert_error(404, "not_found");
    app.assert_ledger_ok().await;
}
