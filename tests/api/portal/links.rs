//! Portal links and sessions: who may make a link, one use, expiry, the cookie, no
//! session → the expired page, sign-out, the security headers.

use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::support::*;
use crate::helpers::*;

#[tokio::test]
async fn links_are_made_for_the_admin_and_the_tenants_own_key_only() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    let other = app.create_tenant("b").await;
    let (_, own) = app.tenant_key(t).await;
    let (_, others) = app.tenant_key(other).await;
    let service = app.service_token().await;

    let r = make_link(&app, t, ADMIN).await;
    r.assert(201);
    let url = r.str("url");
    assert!(url.starts_with("http://127.0.0.1:8080/portal/enter?token=pl_"), "built from TALLY_ADDR: {url}");
    let expires: chrono::DateTime<chrono::Utc> = r.str("expires_at").parse().unwrap();
    let left = (expires - chrono::Utc::now()).num_seconds();
    assert!((590..=600).contains(&left), "valid 10 minutes, got {left}s");
    // Only a hash of the token is stored.
    let token = url.split("token=").nth(1).unwrap();
    let hash = Sha256::digest(token.as_bytes()).to_vec();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM portal_links WHERE token_hash = $1 AND tenant_id = $2")
        .bind(&hash)
        .bind(t)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    let leaked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM portal_links WHERE position($1 in row(portal_links.*)::text) > 0")
            .bind(token)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(leaked, 0, "the token itself is stored nowhere");

    make_link(&app, t, &own).await.assert(201);
    make_link(&app, t, &others).await.assert_error(404, "not_found");
    make_link(&app, Uuid::now_v7(), ADMIN).await.assert_error(404, "not_found");
    make_link(&app, t, &service).await.assert_error(403, "forbidden");
    make_link(&app, t, "tk_nope").await.assert_error(401, "unauthorized");
    app.post(&format!("/v1/tenants/{t}/portal-sessions"), ADMIN, json!({})).await.assert(201);
    app.get(&format!("/v1/tenants/{t}/portal-sessions"), ADMIN).await.assert_error(405, "method_not_allowed");
    app.post(&format!("/v1/tenants/{t}/portal-sessions"), ADMIN, json!({ "tenant_id": other }))
        .await
        .assert_error(400, "invalid_request");

    // A suspended tenant's own keys change nothing; the admin may still open its portal.
    app.patch(&format!("/v1/tenants/{t}"), ADMIN, json!({ "status": "suspended" })).await.assert(200);
    make_link(&app, t, &own).await.assert_error(403, "forbidden");
    make_link(&app, t, ADMIN).await.assert(201);
    let links: i64 = count(&app, "SELECT count(*) FROM portal_links WHERE tenant_id = $1", t).await;
    assert_eq!(links, 4);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn a_link_opens_one_session_once_with_a_strict_cookie() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("Acme").await;
    app.fund(t, "42.50").await;
    let link = path_of(&make_link(&app, t, ADMIN).await.str("url"));
    let browser = Portal::anonymous(&app);

    let first = browser.get(&link).await;
    first.assert_redirect("/portal");
    let cookie = first.headers.get("set-cookie").unwrap().to_str().unwrap().to_string();
    for part in ["tally_portal=ps_", "Path=/portal", "HttpOnly", "SameSite=Strict", "Max-Age=43200"] {
        assert!(cookie.contains(part), "{cookie} lacks {part}");
    }
    assert!(!cookie.contains("Secure"), "plain http: not Secure");
    assert_eq!(first.headers["referrer-policy"], "no-referrer");

    let session = Portal { cookie: Some(cookie.split(';').next().unwrap().into()), ..Portal::anonymous(&app) };
    let home = session.get("/portal").await;
    home.assert(200).assert_contains("$42.50").assert_contains("Acme");

    // Used: the same link again opens nothing.
    let again = browser.get(&link).await;
    again.assert_redirect("/portal/expired");
    assert!(again.headers.get("set-cookie").is_none());
    browser.get("/portal/enter?token=pl_0000").await.assert_redirect("/portal/expired");
    browser.get("/portal/enter").await.assert_redirect("/portal/expired");
    let sessions = count(&app, "SELECT count(*) FROM portal_sessions WHERE tenant_id = $1", t).await;
    assert_eq!(sessions, 1);

    // Two browsers racing on one fresh link: one session between them.
    let link = path_of(&make_link(&app, t, ADMIN).await.str("url"));
    let (a, b) = tokio::join!(browser.get(&link), browser.get(&link));
    let mut to: Vec<String> = vec![a.location(), b.location()];
    to.sort();
    assert_eq!(to, ["/portal", "/portal/expired"]);
    assert_eq!(count(&app, "SELECT count(*) FROM portal_sessions WHERE tenant_id = $1", t).await, 2);
    app.assert_ledger_ok().await;
}

#[tokio::test]
async fn an_https_public_url_makes_the_cookie_secure() {
    let app = TestApp::spawn_with(|c| {
        c.portal = tally::portal::config::PortalConfig::from_lookup(&|k| {
            (k == "TALLY_PUBLIC_URL").then(|| "https://billing.example.com/".to_string())
        })
        .unwrap()
    })
    .await;
    let t = app.create_tenant("a").await;
    let url = make_link(&app, t, ADMIN).await.str("url");
    assert!(url.starts_with("https://billing.example.com/portal/enter?token=pl_"), "{url}");
    let r = Portal::anonymous(&app).get(&path_of(&url)).await;
    r.assert_redirect("/portal");
    assert!(r.headers["set-cookie"].to_str().unwrap().contains("; Secure"));
}

#[tokio::test]
async fn expired_links_and_sessions_end_on_the_expired_page() {
    let app = TestApp::spawn_with(|c| c.portal.link_ttl = Duration::from_millis(400)).await;
    let t = app.create_tenant("a").await;
    let stale = path_of(&make_link(&app, t, ADMIN).await.str("url"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = Portal::anonymous(&app).get(&stale).await;
    r.assert_redirect("/portal/expired");
    assert!(r.headers.get("set-cookie").is_none());

    // A session past its 12 hours (its end moved into the past: no test waits 12 hours).
    let p = Portal::open(&app, t).await;
    p.get("/portal").await.assert(200);
    let ends: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT expires_at FROM portal_sessions WHERE tenant_id = $1")
            .bind(t)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let hours = (ends - chrono::Utc::now()).num_minutes();
    assert!((11 * 60 + 58..=12 * 60).contains(&hours), "12 hours, got {hours} minutes");
    sqlx::query("UPDATE portal_sessions SET expires_at = now() - interval '1 second' WHERE tenant_id = $1")
        .bind(t)
        .execute(&app.pool)
        .await
        .unwrap();
    p.get("/portal").await.assert_redirect("/portal/expired");
    p.get("/portal/settings").await.assert_redirect("/portal/expired");
}

#[tokio::test]
async fn without_a_session_every_portal_address_goes_to_the_expired_page() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    let nobody = Portal::anonymous(&app);
    let forged = Portal { cookie: Some("tally_portal=ps_forged".into()), ..Portal::anonymous(&app) };
    let receipt = format!("/portal/top-ups/{}/receipt", Uuid::now_v7());
    for who in [&nobody, &forged] {
        for path in [
            "/portal",
            "/portal/usage",
            "/portal/transactions?kind=usage",
            "/portal/transactions.csv",
            "/portal/api-keys",
            "/portal/top-ups",
            "/portal/settings",
            "/portal/nothing/here",
            "/portal/sign-out",
            "/portal/settings/webhook",
            receipt.as_str(),
        ] {
            let r = who.get(path).await;
            r.assert_redirect("/portal/expired");
            assert_eq!(r.headers["cache-control"], "no-store", "{path}");
        }
        for path in ["/portal/api-keys", "/portal/top-ups", "/portal/settings/auto-top-up", "/portal/sign-out"] {
            who.post(path, &[("name", "x"), ("amount", "50")]).await.assert_redirect("/portal/expired");
        }
    }
    assert_eq!(count(&app, "SELECT count(*) FROM api_keys WHERE tenant_id = $1", t).await, 0);
    // With a session, a GET on a form's address shows the form's page.
    let p = Portal::open(&app, t).await;
    p.get("/portal/settings/auto-top-up").await.assert_redirect("/portal/settings");
    p.get("/portal/sign-out").await.assert_redirect("/portal");
    p.get("/portal/nothing/here").await.assert(404).assert_contains("There is nothing here");
    p.get("/portal/").await.assert_redirect("/portal");
    let expired = nobody.get("/portal/expired").await;
    expired.assert(200).assert_contains("Ask your platform for a new portal link");
    nobody.get("/portal/static/portal.css").await.assert(200);

    // A navigation that another site started (an e-mail's link) does not carry the Strict
    // cookie: it gets one same-site hop, which then does (or ends on the expired page).
    let r = nobody
        .client
        .get(format!("{}/portal", app.base))
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("http-equiv=\"refresh\" content=\"0;url=/portal\""));
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    let p = Portal::open(&app, t).await;
    let csrf = p.csrf().await;
    let r = p.post("/portal/sign-out", &[("csrf", &csrf)]).await;
    r.assert_redirect("/portal/expired?signed_out=1");
    assert!(r.headers["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    p.get("/portal").await.assert_redirect("/portal/expired");
    let ended =
        count(&app, "SELECT count(*) FROM portal_sessions WHERE tenant_id = $1 AND ended_at IS NOT NULL", t).await;
    assert_eq!(ended, 1, "kept, marked ended");
}

#[tokio::test]
async fn pages_carry_the_security_headers_and_load_nothing_from_elsewhere() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant("a").await;
    let p = Portal::open(&app, t).await;
    for path in
        ["/portal", "/portal/usage", "/portal/transactions", "/portal/api-keys", "/portal/top-ups", "/portal/settings"]
    {
        let r = p.get(path).await;
        r.assert(200);
        let h = |n: &str| r.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let csp = h("content-security-policy");
        for part in ["default-src 'self'", "script-src 'none'", "frame-ancestors 'none'", "form-action 'self'"] {
            assert!(csp.contains(part), "{path}: CSP {csp} lacks {part}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}");
        assert_eq!((h("x-frame-options"), h("referrer-policy")), ("DENY".into(), "no-referrer".into()), "{path}");
        assert_eq!(h("cache-control"), "no-store", "{path}");
        assert!(h("content-type").starts_with("text/html"), "{path}");
        let html = r.text.to_lowercase();
        assert!(!html.contains("<script"), "{path}: no scripts");
        assert!(!html.contains(" style=\""), "{path}: no inline styles (the CSP forbids them)");
        for attr in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
            assert!(!html.contains(attr), "{path}: loads nothing from another host");
        }
        assert!(html.starts_with("<!doctype html><html lang=\"en\">"), "{path}");
        assert!(html.contains("<title>") && html.contains("href=\"#main\""), "{path}: a title and a skip link");
    }
    let css = p.get(tally::portal::STYLESHEET).await;
    css.assert(200);
    assert!(css.headers["content-type"].to_str().unwrap().starts_with("text/css"));
    assert!(css.text.contains(":focus-visible"), "keyboard focus is visible");
    assert!(css.text.contains("@media (max-width"), "narrow screens are styled");
}
