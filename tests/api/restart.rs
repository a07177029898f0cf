//! The real binary, killed with SIGKILL mid-load and restarted: every retried key applies
//! exactly once, and an acknowledged charge keeps its id across the crash.

use std::collections::HashMap;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn killed_mid_load_retries_apply_exactly_once() {
    let app = TestApp::spawn_with(|c| c.run_workers = false).await;
    let t = app.create_tenant("hot").await;
    app.fund(t, "1000").await;
    let mut first = Process::start(&app.db, &[]).await;
    let client = reqwest::Client::new();
    let keys: Vec<String> = (0..300).map(|i| format!("crash-{i}")).collect();
    let send = |base: String, key: String| {
        let client = client.clone();
        async move {
            let r = client
                .post(format!("{base}/v1/charges"))
                .bearer_auth(ADMIN)
                .header("Idempotency-Key", &key)
                .json(&json!({ "tenant_id": t, "amount": "0.10" }))
                .send()
                .await
                .ok()?;
            if r.status() != 201 {
                return None;
            }
            let body: serde_json::Value = r.json().await.ok()?;
            Some((key, body["id"].as_str()?.to_string()))
        }
    };
    let load = futures::future::join_all(keys.iter().map(|k| send(first.base.clone(), k.clone())));
    let killer = async {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        first.kill();
    };
    let (acked, ()) = tokio::join!(load, killer);
    let acked: HashMap<String, String> = acked.into_iter().flatten().collect();

    let second = Process::start(&app.db, &[]).await;
    let mut ids = HashMap::new();
    for key in &keys {
        let (k, id) = send(second.base.clone(), key.clone()).await.expect("a retry succeeds");
        ids.insert(k, id);
    }
    for (k, id) in &acked {
        assert_eq!(&ids[k], id, "an acknowledged charge is replayed, not applied again");
    }
    let distinct: std::collections::HashSet<&String> = ids.values().collect();
    assert_eq!(distinct.len(), 300);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM charges WHERE tenant_id = $1")
        .bind(t)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 300);
    assert_eq!(app.balance(t).await["available"], "970.00");
    eprintln!("{} of 300 were acknowledged before the kill", acked.len());
    app.assert_ledger_ok().await;
}
