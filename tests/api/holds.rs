//! Holds: place, capture, release, expiry; each resolved exactly once.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn six_concurrent_holds_of_1000_against_5000() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "5000").await;
    let keys: Vec<String> = (0..6).map(|i| format!("h{i}")).collect();
    let calls = keys.iter().map(|k| app.post_idem("/v1/holds", ADMIN, k, json!({ "tenant_id": t, "amount": "1000" })));
    let results = futures::future::join_all(calls).await;
    assert_eq!(results.iter().filter(|r| r.status == 201).count(), 5);
    assert_eq!(results.iter().filter(|r| r.status == 402).count(), 1);
    let b = app.balance(t).await;
    assert_eq!(
        (b["available"].as_str(), b["held"].as_str(), b["total"].as_str()),
        (Some("0.00"), Some("5000.00"), Some("5000.00"))
    );
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn capture_takes_at_most_the_hold_and_releases_the_rest() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "10").await;
    app.gift(t, "1", None).await;
    let h = app
        .post_idem("/v1/holds", ADMIN, "h1", json!({ "tenant_id": t, "amount": "4", "expires_in_seconds": 600 }))
        .await;
    h.assert(201);
    assert_eq!(h.body["status"], "active");
    assert_eq!(h.body["funded_by"]["bonus"], "1.00");
    let id = h.id();
    let b = app.balance(t).await;
    assert_eq!((b["available"].as_str(), b["held"].as_str()), (Some("7.00"), Some("4.00")));
    // The held amount cannot be spent twice.
    app.charge(t, "7.01").await.assert_error(402, "insufficient_funds");

    let cap = format!("/v1/holds/{id}/capture");
    app.post_idem(&cap, ADMIN, "c1", json!({ "amount": "4.01" })).await.assert_error(422, "unprocessable");
    app.post_idem(&cap, ADMIN, "c0", json!({ "amount": "0" })).await.assert_error(400, "invalid_request");
    app.post(&cap, ADMIN, json!({ "amount": "1" })).await.assert_error(400, "invalid_request");
    let c = app.post_idem(&cap, ADMIN, "c2", json!({ "amount": "2.5" })).await;
    c.assert(201);
    assert_eq!(c.body["hold_id"], id.to_string());
    assert_eq!(c.body["cost"]["amount"], "2.50");
    assert_eq!(c.body["funded_by"]["bonus"], "1.00", "capture consumes in spending order");
    assert_eq!(c.body["balance"]["available"], "8.50");
    let replay = app.post_idem(&cap, ADMIN, "c2", json!({ "amount": "2.5" })).await;
    assert_eq!(replay.text, c.text);
    app.post_idem(&cap, ADMIN, "c3", json!({ "amount": "1" })).await.assert_error(409, "conflict");
    app.post(&format!("/v1/holds/{id}/release"), ADMIN, json!({})).await.assert_error(409, "conflict");

    let got = app.get(&format!("/v1/holds/{id}"), ADMIN).await;
    assert_eq!(got.body["status"], "captured");
    assert_eq!(got.body["captured"], "2.50");
    let b = app.balance(t).await;
    assert_eq!(
        (b["available"].as_str(), b["held"].as_str(), b["bonus"].as_str()),
        (Some("8.50"), Some("0.00"), Some("0.00"))
    );
    app.get(&format!("/v1/charges/{}", c.id()), ADMIN).await.assert(200);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn concurrent_capture_and_release_one_wins() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "10").await;
    for round in 0..5 {
        let id = app
            .post_idem("/v1/holds", ADMIN, &format!("h{round}"), json!({ "tenant_id": t, "amount": "1" }))
            .await
            .id();
        let (capture, release, key) =
            (format!("/v1/holds/{id}/capture"), format!("/v1/holds/{id}/release"), format!("c{round}"));
        let (c, r) =
            tokio::join!(app.post_idem(&capture, ADMIN, &key, json!({})), app.post(&release, ADMIN, json!({})));
        let wins = [c.status.is_success(), r.status.is_success()];
        assert_eq!(wins.iter().filter(|w| **w).count(), 1, "capture {} release {}", c.text, r.text);
        let loser = if c.status.is_success() { &r } else { &c };
        loser.assert_error(409, "conflict");
    }
    assert_eq!(app.balance(t).await["held"], "0.00");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn priced_holds_capture_by_usage_and_expire_automatically() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "10").await;
    let h = app
        .post_idem(
            "/v1/holds",
            ADMIN,
            "v",
            json!({ "tenant_id": t, "model": "veo-fast", "usage": { "seconds": 10, "resolution": "1080p" } }),
        )
        .await;
    h.assert(201);
    assert_eq!(h.body["amount"], "1.50");
    let c = app
        .post_idem(
            &format!("/v1/holds/{}/capture", h.id()),
            ADMIN,
            "vc",
            json!({ "usage": { "seconds": 6, "resolution": "1080p" } }),
        )
        .await;
    c.assert(201);
    assert_eq!(c.body["cost"]["amount"], "0.90");

    let e =
        app.post_idem("/v1/holds", ADMIN, "e", json!({ "tenant_id": t, "amount": "2", "expires_in_seconds": 1 })).await;
    e.assert(201);
    app.post_idem("/v1/holds", ADMIN, "bad", json!({ "tenant_id": t, "amount": "2", "expires_in_seconds": 0 }))
        .await
        .assert_error(400, "invalid_request");
    app.post_idem("/v1/holds", ADMIN, "bad2", json!({ "tenant_id": t, "amount": "2", "expires_in_seconds": 604801 }))
        .await
        .assert_error(400, "invalid_request");
    let mut status = String::new();
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        status = app.get(&format!("/v1/holds/{}", e.id()), ADMIN).await.str("status");
        if status == "expired" {
            break;
        }
    }
    assert_eq!(status, "expired");
    app.post_idem(&format!("/v1/holds/{}/capture", e.id()), ADMIN, "late", json!({}))
        .await
        .assert_error(409, "conflict");
    let b = app.balance(t).await;
    assert_eq!((b["held"].as_str(), b["available"].as_str()), (Some("0.00"), Some("9.10")));
    app.assert_ledger_ok().await;
}
