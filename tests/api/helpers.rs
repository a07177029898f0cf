//! Test harness: a real Postgres (embedded and throwaway, or `DATABASE_URL`), a fresh
//! database per test cloned from a migrated template, and the real service over HTTP.
//!
//! With no `DATABASE_URL`, one cluster is started per test process under /tmp and removed
//! at exit (an `atexit` hook, which runs after passing and failing runs alike); the
//! server itself dies with the process even on `kill -9` (PR_SET_PDEATHSIG).

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgPool};
use tally::config::Config;
use tally::db::embedded::{EmbeddedOptions, EmbeddedPostgres};
use tally::db::MIGRATOR;
use tally::state::AppState;
use uuid::Uuid;

pub const ADMIN: &str = "test-admin-token-0123456789";

struct Cluster {
    admin: PgConnectOptions,
    /// The embedded cluster's password (for URLs handed to the real binary).
    password: Option<String>,
    template: String,
    embedded: Mutex<Option<EmbeddedPostgres>>,
    created: Mutex<Vec<String>>,
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| std::thread::spawn(start_cluster).join().expect("starting the test database"))
}

fn start_cluster() -> Cluster {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (admin, embedded) = match std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => (url.parse::<PgConnectOptions>().expect("DATABASE_URL").database("postgres"), None),
        None => {
            tally::db::embedded::reap_abandoned();
            let dir = tally::db::embedded::ephemeral_dir();
            let pg = EmbeddedPostgres::start(EmbeddedOptions {
                dir,
                ephemeral: true,
                fsync: false,
                max_connections: 300,
                preload: None,
            })
            .expect("embedded postgres for tests (install PostgreSQL or set DATABASE_URL)");
            (pg.connect_options("postgres"), Some(pg))
        }
    };
    let password = embedded.as_ref().map(|pg| pg.password().to_string());
    // SAFETY: registering a plain extern "C" function with no captured state.
    unsafe { libc::atexit(cleanup) };
    let template = format!("tally_tpl_{}", std::process::id());
    rt.block_on(async {
        let mut c = sqlx::PgConnection::connect_with(&admin).await.expect("connect to test postgres");
        c.execute(format!("DROP DATABASE IF EXISTS {template}").as_str()).await.unwrap();
        c.execute(format!("CREATE DATABASE {template}").as_str()).await.unwrap();
        let tpl = sqlx::PgConnection::connect_with(&admin.clone().database(&template)).await.unwrap();
        let mut tpl = tpl;
        MIGRATOR.run(&mut tpl).await.expect("migrations");
        tpl.close().await.unwrap();
    });
    Cluster { admin, password, template, embedded: Mutex::new(embedded), created: Mutex::new(Vec::new()) }
}

extern "C" fn cleanup() {
    let Some(c) = CLUSTER_REF.get() else { return };
    if let Some(mut pg) = c.embedded.lock().ok().and_then(|mut e| e.take()) {
        pg.stop();
        return;
    }
    // An external server: drop what this process created.
    let names: Vec<String> = c.created.lock().map(|v| v.clone()).unwrap_or_default();
    let admin = c.admin.clone();
    let template = c.template.clone();
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect_with(&admin).await.ok()?;
            for n in names.iter().chain(std::iter::once(&template)) {
                let _ = conn.execute(format!("DROP DATABASE IF EXISTS {n} WITH (FORCE)").as_str()).await;
            }
            Some(())
        })
    })
    .join();
}

static CLUSTER_REF: OnceLock<&'static Cluster> = OnceLock::new();

/// A fresh database cloned from the migrated template.
pub async fn fresh_database() -> PgConnectOptions {
    let c = cluster();
    let _ = CLUSTER_REF.set(c);
    let name = format!("t_{}", Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect_with(&c.admin).await.unwrap();
    conn.execute(format!("CREATE DATABASE {name} TEMPLATE {}", c.template).as_str()).await.unwrap();
    conn.close().await.unwrap();
    c.created.lock().unwrap().push(name.clone());
    c.admin.clone().database(&name)
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    pub db: PgConnectOptions,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

pub fn test_config() -> Config {
    let mut c = Config::from_lookup(|_| None).unwrap();
    c.admin_token = Some(ADMIN.into());
    c.db_pool_size = 8;
    c.worker_interval = Duration::from_millis(100);
    c.data_dir = std::env::temp_dir().join("tally-test-unused");
    c
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        let db = fresh_database().await;
        Self::spawn_on(db, tweak).await
    }

    /// Another instance of the service on the same database (a second replica).
    pub async fn spawn_on(db: PgConnectOptions, tweak: impl FnOnce(&mut Config)) -> TestApp {
        Self::spawn_sharing(db, None, tweak).await
    }

    /// A second replica that shares `mock` as its payment provider, the way replicas share
    /// a real one.
    pub async fn spawn_sharing(
        db: PgConnectOptions,
        mock: Option<std::sync::Arc<tally::payments::MockProvider>>,
        tweak: impl FnOnce(&mut Config),
    ) -> TestApp {
        let mut config = test_config();
        tweak(&mut config);
        let pool = tally::db::connect(db.clone(), config.db_pool_size).await.unwrap();
        MIGRATOR.run(&pool).await.unwrap();
        let state = tally::startup::build_state(config, pool.clone(), mock).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let server = tokio::spawn(async move {
            let _ = tally::startup::serve(listener, st, async {
                let _ = stopped.await;
            })
            .await;
        });
        let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
        TestApp { base, client, pool, db, state, stop: Some(stop), server: Some(server) }
    }

    /// Stops the server (in-flight requests finish) as a replica going away would.
    #[allow(dead_code)]
    pub async fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
    }

    pub async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>, idem: Option<&str>) -> Resp {
        let mut rb = self.client.request(method, format!("{}{}", self.base, path)).bearer_auth(token);
        if let Some(k) = idem {
            rb = rb.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        Resp::from(rb.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, token, None, None).await
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, token, Some(body), None).await
    }
    pub async fn post_idem(&self, path: &str, token: &str, key: &str, body: Value) -> Resp {
        self.call(Method::POST, path, token, Some(body), Some(key)).await
    }
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, token, Some(body), None).await
    }
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, token, Some(body), None).await
    }
    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call(Method::DELETE, path, token, None, None).await
    }

    pub async fn create_tenant(&self, name: &str) -> Uuid {
        let r = self.post("/v1/tenants", ADMIN, json!({ "name": name })).await;
        r.assert(201);
        r.id()
    }

    /// Adds paid credit through an admin adjustment.
    pub async fn fund(&self, tenant: Uuid, amount: &str) {
        self.post_idem(
            &format!("/v1/admin/tenants/{tenant}/adjustments"),
            ADMIN,
            &Uuid::now_v7().to_string(),
            json!({ "amount": amount, "kind": "adjustment", "reason": "test funding" }),
        )
        .await
        .assert(201);
    }

    pub async fn gift(&self, tenant: Uuid, amount: &str, expires_at: Option<String>) -> Value {
        let r = self
            .post_idem(
                &format!("/v1/admin/tenants/{tenant}/adjustments"),
                ADMIN,
                &Uuid::now_v7().to_string(),
                json!({ "amount": amount, "kind": "gift", "reason": "test gift", "expires_at": expires_at }),
            )
            .await;
        r.assert(201);
        r.body
    }

    pub async fn tenant_key(&self, tenant: Uuid) -> (Uuid, String) {
        let r = self.post(&format!("/v1/tenants/{tenant}/api-keys"), ADMIN, json!({ "name": "k" })).await;
        r.assert(201);
        (r.id(), r.body["key"].as_str().unwrap().to_string())
    }

    pub async fn service_token(&self) -> String {
        let r = self.post("/v1/admin/service-tokens", ADMIN, json!({ "name": "backend" })).await;
        r.assert(201);
        r.body["token"].as_str().unwrap().to_string()
    }

    pub async fn balance(&self, tenant: Uuid) -> Value {
        let r = self.get(&format!("/v1/tenants/{tenant}/balance"), ADMIN).await;
        r.assert(200);
        r.body
    }

    pub async fn charge(&self, tenant: Uuid, amount: &str) -> Resp {
        self.post_idem(
            "/v1/charges",
            ADMIN,
            &Uuid::now_v7().to_string(),
            json!({ "tenant_id": tenant, "amount": amount }),
        )
        .await
    }

    /// The ledger invariants, through the service's own check and directly in SQL.
    pub async fn assert_ledger_ok(&self) {
        let r = self.get("/v1/admin/ledger/check", ADMIN).await;
        r.assert(200);
        assert_eq!(r.body["ok"], true, "ledger violations: {}", r.body["violations"]);
        let negative: i64 = sqlx::query_scalar("SELECT count(*) FROM balances WHERE paid < 0 OR bonus < 0 OR held < 0")
            .fetch_one(&self.pool)
            .await
            .unwrap();
        assert_eq!(negative, 0);
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    async fn from(r: reqwest::Response) -> Resp {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, headers, body, text }
    }

    #[track_caller]
    pub fn assert(&self, status: u16) -> &Resp {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        self
    }

    /// Asserts a problem+json error with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> &Resp {
        self.assert(status);
        assert_eq!(self.body["code"], code, "body: {}", self.text);
        assert_eq!(self.body["status"], status);
        let ct = self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert_eq!(ct, "application/problem+json", "content type");
        self
    }

    pub fn id(&self) -> Uuid {
        self.body["id"].as_str().and_then(|s| s.parse().ok()).expect("an id")
    }

    pub fn str(&self, field: &str) -> String {
        self.body[field].as_str().unwrap_or_default().to_string()
    }
}

/// A URL for `db`, for running the real `tally` binary against a test database.
pub fn database_url(db: &PgConnectOptions) -> String {
    let name = db.get_database().unwrap_or("postgres");
    match std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        Some(u) => {
            let mut url = url::Url::parse(&u).expect("DATABASE_URL");
            url.set_path(&format!("/{name}"));
            url.to_string()
        }
        None => {
            let socket = db.get_socket().expect("embedded clusters listen on a socket");
            let password = cluster().password.as_deref().unwrap_or_default();
            format!(
                "postgres://{}:{password}@localhost:{}/{name}?host={}",
                db.get_username(),
                db.get_port(),
                socket.display()
            )
        }
    }
}

/// The real service binary, started on `db`; killed (SIGKILL) when dropped.
pub struct Process {
    pub child: std::process::Child,
    pub base: String,
}

impl Process {
    pub async fn start(db: &PgConnectOptions, extra: &[(&str, &str)]) -> Process {
        Self::start_logging_to(db, extra, std::process::Stdio::null()).await
    }

    /// As [`Process::start`], with the service's stdout (its log) sent to `stdout`.
    pub async fn start_logging_to(
        db: &PgConnectOptions,
        extra: &[(&str, &str)],
        stdout: std::process::Stdio,
    ) -> Process {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tally"));
        cmd.env("DATABASE_URL", database_url(db))
            .env("TALLY_ADDR", format!("127.0.0.1:{port}"))
            .env("TALLY_ADMIN_TOKEN", ADMIN)
            .env("RUST_LOG", "warn")
            .stdout(stdout);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the tally binary");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
                if r.status() == 200 {
                    return Process { child, base };
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("tally did not become ready");
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
