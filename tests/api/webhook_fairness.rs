//! One tenant's dead webhook endpoint delays only its own events: with 200 events due at an
//! endpoint that accepts connections and never answers, another tenant's new event reaches
//! its healthy endpoint within 2 s, and the dead endpoint never holds more than the
//! per-endpoint cap of sends at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::top_ups::{fast, set_card, top_up, wait_until};

/// Accepts connections and never answers; counts them, and the most open at once.
#[derive(Clone, Default)]
struct Dead {
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    most_open: Arc<AtomicUsize>,
}

async fn dead_endpoint() -> (String, Dead) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let dead = Dead::default();
    let d = dead.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            d.accepted.fetch_add(1, Ordering::SeqCst);
            let now = d.open.fetch_add(1, Ordering::SeqCst) + 1;
            d.most_open.fetch_max(now, Ordering::SeqCst);
            let d = d.clone();
            tokio::spawn(async move {
                // Read whatever comes, answer nothing, until the client gives up.
                let mut buf = [0u8; 4096];
                while let Ok(n) = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                d.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (url, dead)
}

/// A healthy endpoint: answers 204 and records when each event arrived.
async fn healthy_endpoint() -> (String, Arc<Mutex<Vec<(Value, Instant)>>>) {
    let got: Arc<Mutex<Vec<(Value, Instant)>>> = Default::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let g = g.clone();
            async move {
                g.lock().unwrap().push((serde_json::from_slice(&body).unwrap(), Instant::now()));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

#[tokio::test]
async fn a_dead_endpoint_does_not_delay_another_tenants_events() {
    // Sends time out after 10 s (the default) and are retried 50 ms later: the dead endpoint
    // always has work due.
    let app = TestApp::spawn_with(fast).await;
    let cap = app.state.config.webhook_endpoint_in_flight;
    let (dead_url, dead) = dead_endpoint().await;
    let (good_url, good) = healthy_endpoint().await;

    let a = app.create_tenant("dead endpoint").await;
    app.put(&format!("/v1/tenants/{a}/webhook"), ADMIN, json!({ "url": dead_url })).await.assert(200);
    set_card(&app, a, "pm_mock_ok").await.assert(200);
    let made: Vec<u16> = futures::stream::iter(0..200)
        .map(|i| {
            let app = &app;
            async move { top_up(app, a, &format!("a-{i}"), "5").await.status.as_u16() }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(made.iter().all(|s| *s == 201), "200 top-ups, 200 top_up.succeeded events");
    wait_until("the dead endpoint is busy", Duration::from_secs(5), || async {
        dead.open.load(Ordering::SeqCst) >= cap
    })
    .await;
    let due: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE tenant_id = $1 AND status = 'pending'")
            .bind(a)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(due, 200, "all of A's deliveries still pending");

    let b = app.create_tenant("healthy endpoint").await;
    app.put(&format!("/v1/tenants/{b}/webhook"), ADMIN, json!({ "url": good_url })).await.assert(200);
    set_card(&app, b, "pm_mock_ok").await.assert(200);
    for i in 0..3 {
        let r = top_up(&app, b, &format!("b-{i}"), "5").await;
        r.assert(201);
        let sent = Instant::now();
        let top_up_id = r.str("id");
        wait_until("B's event at its healthy endpoint", Duration::from_secs(2), || async {
            good.lock().unwrap().iter().any(|(e, _)| e["data"]["id"] == top_up_id.as_str())
        })
        .await;
        let arrived = good.lock().unwrap().iter().find(|(e, _)| e["data"]["id"] == top_up_id.as_str()).unwrap().1;
        let late = arrived - sent;
        eprintln!("B's event {i} arrived {late:?} after its top-up");
        assert!(late < Duration::from_secs(2), "B's event took {late:?}");
    }
    assert!(
        dead.most_open.load(Ordering::SeqCst) <= cap,
        "the dead endpoint held {} sends at once; the cap is {cap}",
        dead.most_open.load(Ordering::SeqCst)
    );
    assert!(good.lock().unwrap().iter().all(|(e, _)| e["tenant_id"] == b.to_string()));
    app.assert_ledger_ok().await;
}
