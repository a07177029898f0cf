//! The database has the last word: whatever the application does, an overdraft and an
//! edit of a ledger row are refused by Postgres itself.

use crate::helpers::*;

#[tokio::test]
async fn constraints_and_triggers_guard_the_ledger() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "5").await;
    let overdraw =
        sqlx::query("UPDATE balances SET paid = paid - 5.000001 WHERE tenant_id = $1").bind(t).execute(&app.pool).await;
    let err = overdraw.unwrap_err().into_database_error().unwrap();
    assert_eq!(err.code().as_deref(), Some("23514"), "CHECK (paid >= 0)");
    for sql in [
        "UPDATE ledger_entries SET amount = amount * 2 WHERE tenant_id = $1",
        "DELETE FROM ledger_entries WHERE tenant_id = $1",
        "UPDATE ledger_transactions SET description = 'edited' WHERE tenant_id = $1",
        "DELETE FROM ledger_transactions WHERE tenant_id = $1",
    ] {
        let r = sqlx::query(sql).bind(t).execute(&app.pool).await;
        assert!(r.unwrap_err().to_string().contains("append-only"), "{sql}");
    }
    assert_eq!(app.balance(t).await["paid"], "5.00");
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn the_check_reports_a_tampered_ledger() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    app.fund(t, "5").await;
    // Simulate corruption behind the service's back: the cached balance drifts.
    sqlx::query("UPDATE balances SET paid = paid + 1 WHERE tenant_id = $1").bind(t).execute(&app.pool).await.unwrap();
    let r = app.get("/v1/admin/ledger/check", ADMIN).await;
    r.assert(200);
    assert_eq!(r.body["ok"], false);
    let v = r.body["violations"].to_string();
    assert!(v.contains("cached balance differs"), "{v}");
}
