//! The portal in real headless Chromium, driven through chromedriver (WebDriver).
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them these tests print a loud
//! SKIP line and pass, unless `TALLY_REQUIRE_BROWSER=1` (as `.ci/run` sets after
//! installing them), in which case they fail. A failing scenario leaves a screenshot in
//! `target/portal-screenshots/<test>.png`; the screenshot test leaves every page there
//! (`overview-375.png`, `usage-1280.png`, …) at 375 and 1280 px wide, and fails if any
//! page is wider than the screen.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::{json, Value};
use uuid::Uuid;

use super::support::*;
use crate::helpers::*;
use crate::top_ups::fast;

type Res<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n))).find(|p| p.is_file())
}

fn require_browser() -> bool {
    matches!(std::env::var("TALLY_REQUIRE_BROWSER").as_deref(), Ok("1" | "true" | "yes" | "on"))
}

/// Where screenshots go: `target/portal-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("portal-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Chromium under chromedriver, with a fresh profile; both removed when dropped.
struct Browser {
    client: Option<Client>,
    driver: Child,
    profile: PathBuf,
    downloads: PathBuf,
}

impl Browser {
    /// `None` (after a loud SKIP line) when Chromium or chromedriver is missing and the
    /// browser is not required.
    async fn start(test: &str) -> Option<Browser> {
        let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"]);
        let driver = on_path(&["chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            assert!(
                !require_browser(),
                "TALLY_REQUIRE_BROWSER=1 but chromium/chromedriver are not installed (apt-get install chromium chromium-driver)"
            );
            // Straight to the terminal: the test harness hides what a passing test prints.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!! SKIP {test}: chromium and chromedriver not found; install Debian's chromium and \
                 chromium-driver (TALLY_REQUIRE_BROWSER=1 makes this a failure) !!!!!\n"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let root = std::env::temp_dir().join(format!("tally-chromium-{}", Uuid::new_v4().simple()));
        let (profile, downloads, scratch) = (root.join("profile"), root.join("downloads"), root.join("tmp"));
        std::fs::create_dir_all(&downloads).unwrap();
        std::fs::create_dir_all(&scratch).unwrap();
        // Chromium's own scratch files (`org.chromium.*`) go under the test's directory too,
        // so that removing it leaves nothing behind.
        let child = Command::new(&driver)
            .env("TMPDIR", &scratch)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let mut b = Browser { client: None, driver: child, profile: root, downloads: downloads.clone() };
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http.get(format!("{url}/status")).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--hide-scrollbars", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    "download.default_directory": downloads,
                    "download.prompt_for_download": false,
                },
            },
        });
        let Value::Object(caps) = caps else { unreachable!() };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector).capabilities(caps).connect(&url).await.expect("a WebDriver session");
        b.client = Some(client);
        Some(b)
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    /// Runs `scenario`; when it fails, saves a screenshot named after the test first.
    async fn run<'a, F, Fut>(&'a self, test: &str, scenario: F)
    where
        F: FnOnce(&'a Browser) -> Fut,
        Fut: Future<Output = Res> + 'a,
    {
        let outcome = std::panic::AssertUnwindSafe(scenario(self)).catch_unwind().await;
        let failure = match outcome {
            Ok(Ok(())) => {
                // Ends the session, so Chromium exits before its profile is removed.
                let _ = self.c().clone().close().await;
                return;
            }
            Ok(Err(e)) => format!("{e}"),
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        };
        let shot = screenshot_dir().join(format!("{test}.png"));
        let url = self.c().current_url().await.map(|u| u.to_string()).unwrap_or_default();
        match self.c().screenshot().await {
            Ok(png) => std::fs::write(&shot, png).expect("writing the screenshot"),
            Err(e) => eprintln!("no screenshot: {e}"),
        }
        let _ = self.c().clone().close().await;
        panic!("{test} failed at {url}: {failure}\n(screenshot: {})", shot.display());
    }

    async fn text(&self, css: &str) -> Res<String> {
        Ok(self.c().wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await?.text().await?)
    }

    async fn fill(&self, css: &str, value: &str) -> Res {
        let e = self.c().find(Locator::Css(css)).await?;
        e.clear().await?;
        e.send_keys(value).await?;
        Ok(())
    }

    async fn click(&self, css: &str) -> Res {
        self.c().find(Locator::Css(css)).await?.click().await?;
        Ok(())
    }

    async fn nav(&self, label: &str) -> Res {
        self.c().find(Locator::LinkText(label)).await?.click().await?;
        self.c().wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("h1")).await?;
        Ok(())
    }

    async fn page_has(&self, needle: &str) -> Res<bool> {
        Ok(self.c().source().await?.contains(needle))
    }

    /// Waits for the element, as [`Browser::text`] does: the page a click led to may still be loading.
    async fn value(&self, css: &str) -> Res<String> {
        let e = self.c().wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await?;
        Ok(e.prop("value").await?.unwrap_or_default())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session ends with chromedriver; Chromium dies with its driver.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A page on another site (`localhost` is another site than `127.0.0.1`): the e-mail the
/// tenant clicks the portal link in.
async fn mail_page(link: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let page = format!(
        "<!DOCTYPE html><html lang=\"en\"><title>Mail</title><p><a id=\"open\" href=\"{link}\">Open your billing portal</a></p></html>"
    );
    let app = axum::Router::new().route("/mail", axum::routing::get(move || async move { axum::response::Html(page) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://localhost:{port}/mail")
}

async fn wait_for_file(dir: &Path, ext: &str) -> Res<PathBuf> {
    for _ in 0..100 {
        for entry in std::fs::read_dir(dir)? {
            let p = entry?.path();
            if p.extension().is_some_and(|e| e == ext) {
                return Ok(p);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("no .{ext} file arrived in {}", dir.display()).into())
}

#[tokio::test]
async fn the_portal_in_a_real_browser() {
    const TEST: &str = "the_portal_in_a_real_browser";
    let Some(b) = Browser::start(TEST).await else { return };
    let app = TestApp::spawn_with(fast).await;
    let t = app.create_tenant("Acme Labs").await;
    app.fund(t, "20").await;
    card(&app, t, "pm_mock_ok").await;
    let link = format!("{}{}", app.base, path_of(&make_link(&app, t, ADMIN).await.str("url")));
    let mail = mail_page(link).await;
    let app = &app;
    b.run(TEST, |b| async move {
        let c = b.c();
        // Open the link from another site, as from an e-mail: the balance shows.
        c.goto(&mail).await?;
        b.click("#open").await?;
        assert_eq!(b.text("h1").await?, "Overview");
        assert_eq!(b.text(".card.total .value").await?, "$20.00");
        assert!(c.title().await?.starts_with("Overview · Acme Labs"));
        assert_eq!(c.current_url().await?.path(), "/portal");

        // The keyboard: the first Tab reaches the skip link.
        c.perform_actions(
            KeyActions::new("keyboard".into())
                .then(KeyAction::Down { value: Key::Tab.into() })
                .then(KeyAction::Up { value: Key::Tab.into() }),
        )
        .await?;
        assert_eq!(c.active_element().await?.text().await?, "Skip to main content");

        // Create a key: shown once, and it works.
        b.nav("API keys").await?;
        b.fill("#key-name", "browser key").await?;
        b.click("form[action='/portal/api-keys'] button[type=submit]").await?;
        let key = b.value("#new-key").await?;
        assert!(key.starts_with("tk_"), "{key}");
        app.get(&format!("/v1/tenants/{t}/balance"), &key).await.assert(200);
        b.nav("API keys").await?;
        assert!(!b.page_has(&key).await?, "the key is shown only once");
        assert!(b.page_has("browser key").await?);

        // Top up with the card on file: the new balance, and the transaction.
        b.nav("Top-ups").await?;
        b.fill("#amount", "50").await?;
        b.click("form[action='/portal/top-ups'] button[type=submit]").await?;
        let done = b.text(".notice.ok").await?;
        assert!(done.contains("Your top-up of $50.00 succeeded"), "{done}");
        assert!(done.contains("Your total balance is now $70.00"), "{done}");
        b.nav("Overview").await?;
        assert_eq!(b.text(".card.total .value").await?, "$70.00");
        b.nav("Transactions").await?;
        let first = b.text("table.txns tbody tr").await?;
        assert!(first.contains("Top-up") && first.contains("+$50.00") && first.contains("$70.00"), "{first}");

        // A declined card, told in words; the balance stays.
        card(app, t, "pm_mock_declined").await;
        b.nav("Top-ups").await?;
        b.fill("#amount", "25").await?;
        b.click("form[action='/portal/top-ups'] button[type=submit]").await?;
        let declined = b.text(".notice.error").await?;
        assert!(declined.contains("Your card was declined"), "{declined}");
        assert_eq!(app.balance(t).await["total"], "70.00");

        // Download the CSV: the API's CSV of the same rows.
        b.nav("Transactions").await?;
        b.click("a[href^='/portal/transactions.csv']").await?;
        let file = wait_for_file(&b.downloads, "csv").await?;
        let csv = std::fs::read_to_string(&file)?;
        let api = app
            .client
            .get(format!("{}/v1/tenants/{t}/transactions?limit=200", app.base))
            .bearer_auth(ADMIN)
            .header("accept", "text/csv")
            .send()
            .await?
            .text()
            .await?;
        assert_eq!(csv, api);
        assert!(csv.starts_with("id,kind,amount,direction,balance_after,"));
        assert!(csv.lines().any(|l| l.contains(",top_up,50.00,credit,70.00,")), "{csv}");

        // Change auto top-up.
        b.nav("Settings").await?;
        b.click("#auto-enabled").await?;
        b.fill("#auto-threshold", "10").await?;
        b.fill("#auto-amount", "20").await?;
        b.click("form[action='/portal/settings/auto-top-up'] button[type=submit]").await?;
        assert!(b.text(".notice.ok").await?.contains("Auto top-up settings saved"));
        let v = app.get(&format!("/v1/tenants/{t}/auto-top-up"), ADMIN).await;
        assert_eq!(
            (v.body["enabled"].as_bool(), v.str("threshold"), v.str("amount")),
            (Some(true), "10.00".into(), "20.00".into())
        );

        // Give the key a spend limit and one model on its page: shown, and it holds.
        let id = app.get(&format!("/v1/tenants/{t}/api-keys"), ADMIN).await.body["data"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let row = format!("#key-{id}");
        b.nav("API keys").await?;
        b.click(&format!("{row} details.limits summary")).await?;
        b.fill(&format!("#k-{id}-amount"), "5").await?;
        b.click(&format!("#k-{id}-window option[value='day']")).await?;
        b.click(&format!("#k-{id}-only")).await?;
        b.fill(&format!("#k-{id}-models"), "gpt-4o").await?;
        b.click(&format!("{row} form.limits button[type=submit]")).await?;
        let saved = b.text(".notice.ok").await?;
        assert!(saved.contains("spend limit and models were saved"), "{saved}");
        let cell = b.text(&format!("{row} td.limit")).await?;
        assert!(cell.contains("$5.00 a day") && cell.contains("$0.00 spent"), "{cell}");
        assert!(b.text(&format!("{row} td.limit")).await?.contains("gpt-4o"));
        let k = app.get(&format!("/v1/tenants/{t}/api-keys/{id}"), ADMIN).await;
        assert_eq!(k.body["spend_limit"], json!({ "amount": "5.00", "window": "day" }));
        assert_eq!(k.body["allowed_models"], json!(["gpt-4o"]));
        let charge = |amount: &'static str| {
            let body = json!({ "tenant_id": t, "amount": amount, "api_key_id": id });
            async move { app.post_idem("/v1/charges", ADMIN, &Uuid::now_v7().to_string(), body).await }
        };
        charge("1.25").await.assert(201);
        charge("3.76").await.assert_error(402, "spend_limit_exceeded");
        c.refresh().await?;
        let cell = b.text(&format!("{row} td.limit")).await?;
        assert!(cell.contains("$1.25 spent, resets"), "{cell}");
        Ok(())
    })
    .await;
    app.assert_ledger_ok().await;
}

/// Sets the viewport to `width` and the window to the page's full height, then saves a
/// screenshot; fails when the page is wider than the viewport (sideways scrolling).
async fn shoot(b: &Browser, path: &str, width: u32, name: &str) -> Res {
    let c = b.c();
    c.set_window_size(width, 900).await?;
    c.goto(path).await?;
    let inner = c.execute("return window.innerWidth", vec![]).await?.as_u64().unwrap_or(0) as u32;
    let outer = width + (width.saturating_sub(inner));
    c.set_window_size(outer, 900).await?;
    let height = c.execute("return document.documentElement.scrollHeight", vec![]).await?.as_u64().unwrap_or(900);
    c.set_window_size(outer, height as u32 + 16).await?;
    let (inner, scroll) = (
        c.execute("return window.innerWidth", vec![]).await?.as_u64().unwrap_or(0),
        c.execute("return document.documentElement.scrollWidth", vec![]).await?.as_u64().unwrap_or(0),
    );
    assert_eq!(inner, width as u64, "the viewport is {width}px wide");
    assert!(scroll <= inner, "{name}: the page is {scroll}px wide in a {inner}px viewport");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), c.screenshot().await?)?;
    Ok(())
}

#[tokio::test]
async fn portal_screenshots_at_375_and_1280_px() {
    const TEST: &str = "portal_screenshots_at_375_and_1280_px";
    let Some(b) = Browser::start(TEST).await else { return };
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.top_up_bonus_percent = "10".parse().unwrap();
        c.top_up_bonus_expires_days = Some(30);
    })
    .await;
    let t = app.create_tenant("Acme Labs").await;
    card(&app, t, "pm_mock_ok").await;
    let mut top_ups = Vec::new();
    for (i, amount) in ["200", "100"].iter().enumerate() {
        let r = app
            .post_idem(&format!("/v1/tenants/{t}/top-ups"), ADMIN, &format!("t{i}"), json!({ "amount": amount }))
            .await;
        top_ups.push(r.assert(201).id());
    }
    app.gift(t, "15", Some((chrono::Utc::now() + chrono::Duration::days(5)).to_rfc3339())).await;
    // Auto top-up on, with the balance well above its threshold (no attempt starts).
    app.put(
        &format!("/v1/tenants/{t}/auto-top-up"),
        ADMIN,
        json!({ "enabled": true, "threshold": "50", "amount": "100" }),
    )
    .await
    .assert(200);
    let mut keys = Vec::new();
    for name in ["production backend", "staging", "batch jobs"] {
        let r = app.post(&format!("/v1/tenants/{t}/api-keys"), ADMIN, json!({ "name": name })).await;
        keys.push(r.id());
    }
    // Two weeks of usage over three models and three keys, each charge made on its day by
    // the service's clock (charges are append-only: their dates cannot be moved afterwards).
    let usage = |model: &str, day: i64| match model {
        "gpt-4o" => json!({ "input_tokens": 200_000 + day * 37_000, "output_tokens": 60_000 + (day % 5) * 20_000 }),
        "claude-sonnet" => json!({ "input_tokens": 90_000 + (day % 3) * 50_000, "output_tokens": 30_000 }),
        _ => json!({ "width": 1024, "height": 1024, "count": 4 + (day * 7) % 9 }),
    };
    for day in 0..14i64 {
        for (i, model) in ["gpt-4o", "claude-sonnet", "flux-pro"].iter().enumerate() {
            if (day + i as i64) % 4 == 3 {
                continue;
            }
            app.state.clock.set(chrono::Utc::now() - chrono::Duration::days(day));
            let body = json!({ "tenant_id": t, "model": model, "usage": usage(model, day), "api_key_id": keys[i] });
            let r = app.post_idem("/v1/charges", ADMIN, &format!("u{day}-{i}"), body).await;
            r.assert(201);
        }
    }
    app.state.clock.resume();
    // Spend limits on two keys and on the account, and part of a top-up refunded.
    let key_limits = [
        json!({ "spend_limit": { "amount": "500", "window": "month" } }),
        json!({ "spend_limit": { "amount": "25", "window": "day" }, "allowed_models": ["claude-sonnet", "claude-haiku"] }),
    ];
    for (key, body) in keys.iter().zip(key_limits) {
        app.patch(&format!("/v1/tenants/{t}/api-keys/{key}"), ADMIN, body).await.assert(200);
    }
    app.put(&format!("/v1/tenants/{t}/spend-limits"), ADMIN, json!({ "day": "100", "month": "2000" }))
        .await
        .assert(200);
    let refund = json!({ "amount": "40", "reason": "customer asked" });
    app.post_idem(&format!("/v1/tenants/{t}/top-ups/{}/refunds", top_ups[0]), ADMIN, "r1", refund).await.assert(201);
    let p = format!("{}{}", app.base, path_of(&make_link(&app, t, ADMIN).await.str("url")));
    let app = &app;
    b.run(TEST, |b| async move {
        b.c().goto(&p).await?;
        assert_eq!(b.text("h1").await?, "Overview");
        for width in [375u32, 1280] {
            for (page, name) in [
                ("", "overview"),
                ("/usage", "usage"),
                ("/transactions", "transactions"),
                ("/api-keys", "api-keys"),
                ("/top-ups", "top-ups"),
                ("/settings", "settings"),
            ] {
                shoot(b, &format!("{}/portal{page}", app.base), width, &format!("{name}-{width}")).await?;
            }
        }
        Ok(())
    })
    .await;
    app.assert_ledger_ok().await;
}
