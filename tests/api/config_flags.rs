//! Boolean variables in the real binary: `TALLY_ALLOW_PRIVATE_WEBHOOKS=1` starts the service
//! and takes effect; a value that is no boolean stops start-up with exit code 2 naming it.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn allow_private_webhooks_1_starts_the_binary_and_applies() {
    let app = TestApp::spawn_with(|c| c.run_workers = false).await;
    let t = app.create_tenant("dev").await;
    let client = reqwest::Client::new();
    for spelling in ["1", "yes", "ON"] {
        let svc =
            Process::start(&app.db, &[("TALLY_ALLOW_PRIVATE_WEBHOOKS", spelling), ("TALLY_RUN_WORKERS", "0")]).await;
        let r = client
            .put(format!("{}/v1/tenants/{t}/webhook", svc.base))
            .bearer_auth(ADMIN)
            .json(&json!({ "url": "http://127.0.0.1:9/hook" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "TALLY_ALLOW_PRIVATE_WEBHOOKS={spelling} allows a loopback webhook");
    }
    let strict = Process::start(&app.db, &[("TALLY_ALLOW_PRIVATE_WEBHOOKS", "0")]).await;
    let r = client
        .put(format!("{}/v1/tenants/{t}/webhook", strict.base))
        .bearer_auth(ADMIN)
        .json(&json!({ "url": "http://127.0.0.1:9/hook" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "=0 keeps the guard");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_value_that_is_no_boolean_stops_start_up_naming_the_variable() {
    let app = TestApp::spawn_with(|c| c.run_workers = false).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .env("DATABASE_URL", database_url(&app.db))
        .env("TALLY_ADDR", "127.0.0.1:0")
        .env("TALLY_ADMIN_TOKEN", ADMIN)
        .env("TALLY_ALLOW_PRIVATE_WEBHOOKS", "maybe")
        .output()
        .expect("the tally binary");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TALLY_ALLOW_PRIVATE_WEBHOOKS"), "{stderr}");
    app.assert_ledger_ok().await;
}
