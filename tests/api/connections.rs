//! Connections: a request whose headers do not arrive in time loses its connection; open
//! connections are bounded (one more is closed at once) and counted in /metrics; SIGTERM
//! still lets in-flight requests finish before the process exits 0.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
async fn until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<Instant>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Err(_) => return (got, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(Instant::now())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn half_sent_headers_are_dropped_after_the_configured_time() {
    let timeout = Duration::from_millis(500);
    let app = TestApp::spawn_with(|c| {
        c.run_workers = false;
        c.header_read_timeout = timeout;
    })
    .await;
    let t = app.create_tenant("a").await;
    app.fund(t, "1").await;

    // A request line and one header, then silence.
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    let sent = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: tally\r\n").await.unwrap();
    let (got, closed) = until_closed(&mut slow, Duration::from_secs(5)).await;
    let closed = closed.expect("the server closes a connection whose headers never finish");
    let after = closed - sent;
    assert!(after >= timeout - Duration::from_millis(50), "closed after {after:?}: before the timeout");
    assert!(after < timeout + Duration::from_secs(2), "closed after {after:?}");
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "the half request was not served");

    // Trickling the headers a byte at a time does not extend the deadline.
    let mut trickle = TcpStream::connect(addr(&app)).await.unwrap();
    let started = Instant::now();
    let request = b"GET /healthz HTTP/1.1\r\nHost: tally\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = None;
    for b in request {
        if trickle.write_all(&[*b]).await.is_err() {
            cut = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let (got, closed) = until_closed(&mut trickle, Duration::from_secs(3)).await;
    assert!(cut.is_some() || closed.is_some(), "the trickling client was cut off");
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "the trickled request was not served");

    // A whole request on time is served, and the idle keep-alive connection is closed
    // after the same time.
    let mut ok = TcpStream::connect(addr(&app)).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: tally\r\n\r\n").await.unwrap();
    let answered = Instant::now();
    let (got, closed) = until_closed(&mut ok, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200 OK"), "{}", String::from_utf8_lossy(&got));
    let idle = closed.expect("an idle keep-alive connection is closed") - answered;
    assert!(idle >= timeout - Duration::from_millis(50) && idle < timeout + Duration::from_secs(2), "{idle:?}");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn open_connections_are_bounded_and_counted() {
    let app = TestApp::spawn_with(|c| {
        c.run_workers = false;
        c.max_connections = 3;
    })
    .await;
    // Raw connections only until the end: the harness's pooled client would hold a slot.
    let mut held = Vec::new();
    for _ in 0..2 {
        let s = TcpStream::connect(addr(&app)).await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The third slot serves /metrics, which sees at least the three open connections.
    let mut third = TcpStream::connect(addr(&app)).await.unwrap();
    third.write_all(b"GET /metrics HTTP/1.1\r\nHost: tally\r\n\r\n").await.unwrap();
    let mut metrics = Vec::new();
    let mut buf = [0u8; 65536];
    while !String::from_utf8_lossy(&metrics).contains("http_connections_max") {
        let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "metrics answered");
        metrics.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&metrics).to_string();
    let open: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("http_connections_open "))
        .expect("the http_connections_open gauge")
        .trim()
        .parse()
        .unwrap();
    assert!(open >= 3.0, "open connections counted: {open}");

    // A fourth is closed at once, without an answer.
    let mut fourth = TcpStream::connect(addr(&app)).await.unwrap();
    let _ = fourth.write_all(b"GET /healthz HTTP/1.1\r\nHost: tally\r\n\r\n").await;
    let (got, closed) = until_closed(&mut fourth, Duration::from_secs(2)).await;
    assert!(closed.is_some() && got.is_empty(), "over the limit: closed unanswered");

    // A slot freed is a slot usable again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fifth = TcpStream::connect(addr(&app)).await.unwrap();
    fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: tally\r\nConnection: close\r\n\r\n").await.unwrap();
    let (got, _) = until_closed(&mut fifth, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200 OK"));
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = app.get("/metrics", "").await.text;
    assert!(text.contains("http_connections_refused_total"), "refusals are counted");
    let t = app.create_tenant("a").await;
    app.fund(t, "1").await;
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_exits_0() {
    let app = TestApp::spawn_with(|c| c.run_workers = false).await;
    let t = app.create_tenant("a").await;
    let mut svc =
        Process::start(&app.db, &[("TALLY_MOCK_SLOW_MS", "1500"), ("TALLY_HEADER_READ_TIMEOUT_MS", "300")]).await;
    let client = reqwest::Client::new();
    let r = client
        .put(format!("{}/v1/tenants/{t}/payment-method", svc.base))
        .bearer_auth(ADMIN)
        .json(&json!({ "token": "pm_mock_slow" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // An idle connection and a half-sent request must not hold the shutdown up for long.
    let addr = svc.base.trim_start_matches("http://").to_string();
    let _idle = TcpStream::connect(&addr).await.unwrap();
    let mut half = TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let top_up = client
        .post(format!("{}/v1/tenants/{t}/top-ups", svc.base))
        .bearer_auth(ADMIN)
        .header("Idempotency-Key", "slow-1")
        .json(&json!({ "amount": "10" }))
        .send();
    let term = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(svc.child.id() as i32, libc::SIGTERM) };
    };
    let (resp, ()) = tokio::join!(top_up, term);
    let resp = resp.expect("the in-flight top-up is answered");
    assert_eq!(resp.status(), 201);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = svc.child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the process exits after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
    assert_eq!(app.balance(t).await["available"], "10.00");
    app.assert_ledger_ok().await;
}
