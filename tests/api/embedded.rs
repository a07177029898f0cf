//! The embedded database protects itself. These run the real `tally` binary with no
//! `DATABASE_URL`, each on a data directory of its own: a damaged or missing cluster is
//! refused and left exactly as it was; the cluster lives and dies with its data directory;
//! a second process on a data directory is turned away without disturbing the first; a
//! `trust` cluster of an earlier version is honoured where it was recorded and moved to a
//! password; the test harness reaps only what it can prove is an abandoned cluster of ours.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;
use uuid::Uuid;

use crate::helpers::ADMIN;

/// A private (0700) temporary directory, removed on drop, failing tests included.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let p = std::env::temp_dir().join(format!("tally-embedded-test-{}", Uuid::now_v7().simple()));
        fs::DirBuilder::new().mode(0o700).create(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The real binary on `data`; killed on drop (its server dies with it).
struct Tally {
    child: Child,
    base: String,
    http: reqwest::Client,
}

enum Started {
    Ready(Tally),
    Exited { code: Option<i32>, stderr: String, after: Duration },
}

impl Started {
    #[track_caller]
    fn ready(self) -> Tally {
        match self {
            Started::Ready(t) => t,
            Started::Exited { code, stderr, .. } => panic!("tally exited ({code:?}):\n{stderr}"),
        }
    }

    #[track_caller]
    fn refused(self) -> (String, Duration) {
        match self {
            Started::Ready(t) => panic!("tally started on {} but should have refused", t.base),
            Started::Exited { code, stderr, after } => {
                assert!(code.is_some_and(|c| c != 0), "exit code {code:?}; stderr:\n{stderr}");
                (stderr, after)
            }
        }
    }
}

async fn start(data: &Path) -> Started {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let stderr_path = data.with_extension(format!("stderr-{port}"));
    let stderr = fs::File::create(&stderr_path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    cmd.env_remove("DATABASE_URL")
        .env("TALLY_DATA_DIR", data)
        .env("TALLY_ADDR", format!("127.0.0.1:{port}"))
        .env("TALLY_ADMIN_TOKEN", ADMIN)
        .env("RUST_LOG", "warn")
        .current_dir(data.parent().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    // SAFETY: prctl is async-signal-safe; the service never outlives this test's thread.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("the tally binary");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    while started.elapsed() < Duration::from_secs(90) {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
            return Started::Exited { code: status.code(), stderr, after: started.elapsed() };
        }
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                return Started::Ready(Tally { child, base, http });
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("tally neither became ready nor exited");
}

impl Tally {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait: the service stops its server in order.
    async fn stop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet waited for.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "tally stopped with {status}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tally did not stop within 30 s of SIGTERM");
    }

    async fn call(&self, method: reqwest::Method, path: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut rb = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(ADMIN);
        if let Some(k) = key {
            rb = rb.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None, None).await
    }

    /// A tenant with `amount` of paid credit from an admin adjustment.
    async fn funded_tenant(&self, amount: &str) -> Uuid {
        let (status, body) =
            self.call(reqwest::Method::POST, "/v1/tenants", None, Some(json!({ "name": "acme" }))).await;
        assert_eq!(status, 201, "{body}");
        let t: Uuid = body["id"].as_str().unwrap().parse().unwrap();
        let path = format!("/v1/admin/tenants/{t}/adjustments");
        let fund = json!({ "amount": amount, "kind": "adjustment", "reason": "wire transfer" });
        let (status, body) = self.call(reqwest::Method::POST, &path, Some("fund-1"), Some(fund)).await;
        assert_eq!(status, 201, "{body}");
        t
    }

    async fn available(&self, t: Uuid) -> String {
        let (status, body) = self.get(&format!("/v1/tenants/{t}/balance")).await;
        assert_eq!(status, 200, "{body}");
        body["available"].as_str().unwrap().to_string()
    }

    /// The ledger invariants: the service's own check, and no negative balance in SQL
    /// (over the embedded cluster's socket in `socket_dir`, with its password).
    async fn assert_ledger_ok(&self, data: &Path, socket_dir: &Path) {
        let (status, body) = self.get("/v1/admin/ledger/check").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["ok"], true, "ledger violations: {}", body["violations"]);
        let mut conn = sqlx::PgConnection::connect_with(&cluster_options(data, socket_dir)).await.unwrap();
        let negative: i64 = sqlx::query_scalar("SELECT count(*) FROM balances WHERE paid < 0 OR bonus < 0 OR held < 0")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(negative, 0);
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cluster_options(data: &Path, socket_dir: &Path) -> PgConnectOptions {
    let password = fs::read_to_string(data.join("db_password")).unwrap();
    PgConnectOptions::new_without_pgpass()
        .socket(socket_dir)
        .port(5432)
        .username("tally")
        .password(password.trim())
        .database("tally")
}

/// The uid and gid of the `postgres` system user.
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, "postgres"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().expect("a postgres user")
    };
    (id("-u"), id("-g"))
}

/// Every file and directory under `dir`: path → (size, modification time).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), (m.len(), m.mtime(), m.mtime_nsec()));
        }
    }
    out
}

/// The PostgreSQL server started by process `parent`.
fn postmaster_of(parent: u32) -> u32 {
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let ppid = stat[close + 1..].split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if &stat[open + 1..close] == "postgres" && ppid == Some(parent) {
            return pid;
        }
    }
    panic!("no postgres server under pid {parent}");
}

#[tokio::test]
async fn damaged_cluster_is_refused_and_left_as_it_was() {
    let scratch = Scratch::new();
    let data = scratch.0.join("data");
    let cluster = data.join("pg");
    let mut tally = start(&data).await.ready();
    let t = tally.funded_tenant("12.34").await;
    assert_eq!(tally.available(t).await, "12.34");
    tally.assert_ledger_ok(&data, &cluster).await;
    tally.stop().await;

    let files = snapshot(&cluster);
    assert!(files.len() > 100, "a whole cluster: {} files", files.len());
    fs::rename(cluster.join("PG_VERSION"), scratch.0.join("PG_VERSION")).unwrap();
    let (stderr, _) = start(&data).await.refused();
    assert!(stderr.contains("PG_VERSION is missing"), "names the problem: {stderr}");
    assert!(stderr.contains(&cluster.display().to_string()), "names the cluster: {stderr}");
    assert!(stderr.contains("Nothing was changed"), "{stderr}");
    let mut expected = files.clone();
    expected.remove(Path::new("PG_VERSION"));
    assert_eq!(snapshot(&cluster), expected, "every cluster file is still there, unchanged");

    fs::rename(scratch.0.join("PG_VERSION"), cluster.join("PG_VERSION")).unwrap();
    let mut tally = start(&data).await.ready();
    assert_eq!(tally.available(t).await, "12.34", "the balance is found again");
    tally.assert_ledger_ok(&data, &cluster).await;
    tally.stop().await;
}

#[tokio::test]
async fn cluster_lives_and_dies_with_its_data_directory() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: only as root does the server run as another user");
        return;
    }
    // 0700 and root's: the server's user (postgres) cannot enter it.
    let scratch = Scratch::new();
    let data = scratch.0.join("data");
    let (postgres_uid, _) = postgres_ids();
    // What could be left outside the data directory: a cluster under /var/lib/tally-embedded
    // (where earlier versions put it), a socket or socket directory in /tmp, anything of the
    // server's user in /tmp.
    let outside = || -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        for e in fs::read_dir("/var/lib/tally-embedded").into_iter().flatten().flatten() {
            seen.insert(format!("/var/lib/tally-embedded/{}", e.file_name().to_string_lossy()));
        }
        for e in fs::read_dir("/tmp").unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let theirs = e.metadata().is_ok_and(|m| m.uid() == postgres_uid);
            if name.starts_with("tally-pg") || name.starts_with(".s.PGSQL") || theirs {
                seen.insert(format!("/tmp/{name}"));
            }
        }
        seen
    };
    let before = outside();
    let mut tally = start(&data).await.ready();
    assert_eq!(fs::metadata(data.join("pg")).unwrap().uid(), postgres_uid, "the server runs as postgres");
    let cwd = fs::read_link(format!("/proc/{}/cwd", postmaster_of(tally.pid()))).unwrap();
    assert_eq!(cwd, data.join("pg"), "the server runs in the cluster inside the data directory");
    let t = tally.funded_tenant("5.00").await;
    tally.assert_ledger_ok(&data, &data.join("pg")).await;
    let during: Vec<String> = outside().difference(&before).cloned().collect();
    assert!(during.is_empty(), "outside the data directory while running: {during:?}");
    tally.stop().await;

    fs::remove_dir_all(&data).unwrap();
    let left: Vec<String> = outside().difference(&before).cloned().collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    let mut tally = start(&data).await.ready();
    assert_eq!(tally.get(&format!("/v1/tenants/{t}")).await.0, 404, "a fresh, empty database");
    let (status, list) = tally.get("/v1/tenants").await;
    assert_eq!(status, 200);
    assert_eq!(list["data"], json!([]));
    tally.assert_ledger_ok(&data, &data.join("pg")).await;
    tally.stop().await;
}

#[tokio::test]
async fn second_process_on_a_data_directory_is_refused() {
    let scratch = Scratch::new();
    let data = scratch.0.join("data");
    let cluster = data.join("pg");
    let mut first = start(&data).await.ready();
    let t = first.funded_tenant("10.00").await;
    let lock = fs::read_to_string(data.join("tally.lock")).unwrap();
    let postmaster = fs::read_to_string(cluster.join("postmaster.pid")).unwrap();

    let (stderr, after) = start(&data).await.refused();
    assert!(after < Duration::from_secs(10), "refused at once, not after {after:?}");
    assert!(stderr.contains(&format!("pid {}", first.pid())), "names the holder: {stderr}");
    assert_eq!(fs::read_to_string(data.join("tally.lock")).unwrap(), lock);
    assert_eq!(fs::read_to_string(cluster.join("postmaster.pid")).unwrap(), postmaster);
    assert!(fs::symlink_metadata(cluster.join(".s.PGSQL.5432")).unwrap().file_type().is_socket());

    let charges = (0..64).map(|i| {
        let first = &first;
        async move {
            let body = json!({ "tenant_id": t, "amount": "0.10" });
            first.call(reqwest::Method::POST, "/v1/charges", Some(&format!("c-{i}")), Some(body)).await
        }
    });
    let answers = futures::future::join_all(charges).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert!(statuses.iter().all(|s| *s == 201), "statuses: {statuses:?}");
    assert_eq!(first.available(t).await, "3.60");
    first.assert_ledger_ok(&data, &cluster).await;
    first.stop().await;
}

#[tokio::test]
async fn missing_or_ambiguous_recorded_cluster_is_refused() {
    let scratch = Scratch::new();
    let data = scratch.0.join("data");
    fs::create_dir(&data).unwrap();
    let elsewhere = scratch.0.join("elsewhere");
    fs::write(data.join("CLUSTER_LOCATION"), elsewhere.display().to_string()).unwrap();
    let (stderr, _) = start(&data).await.refused();
    assert!(stderr.contains("is missing") && stderr.contains(&elsewhere.join("pg").display().to_string()), "{stderr}");
    assert!(!elsewhere.exists() && !data.join("pg").exists(), "no new cluster anywhere");

    // Recorded elsewhere, and one in the data directory too: which one is the user's?
    fs::create_dir_all(elsewhere.join("pg")).unwrap();
    fs::create_dir(data.join("pg")).unwrap();
    let (stderr, _) = start(&data).await.refused();
    assert!(stderr.contains("two embedded databases"), "{stderr}");

    // Recorded in the data directory, and empty: also not a fresh initdb.
    fs::write(data.join("CLUSTER_LOCATION"), ".\n").unwrap();
    let (stderr, _) = start(&data).await.refused();
    assert!(stderr.contains("is empty"), "{stderr}");
    for d in [data.join("pg"), elsewhere.join("pg")] {
        assert_eq!(fs::read_dir(d).unwrap().count(), 0, "left as it was");
    }
}

#[tokio::test]
async fn trust_cluster_of_an_earlier_version_is_honoured_and_moved_to_a_password() {
    // Made as earlier versions did: `initdb --auth=trust` in a directory recorded in
    // CLUSTER_LOCATION (an absolute path whose `pg` is the cluster).
    let scratch = Scratch::new();
    let legacy = scratch.0.join("legacy");
    let cluster = legacy.join("pg");
    let data = scratch.0.join("data");
    fs::create_dir(&data).unwrap();
    fs::DirBuilder::new().mode(0o700).recursive(true).create(&cluster).unwrap();
    let mut initdb = Command::new(tally::db::embedded::find_bin_dir().unwrap().join("initdb"));
    initdb.arg("-D").arg(&cluster).args(["-U", "tally", "--auth=trust", "--no-sync", "--no-instructions"]);
    initdb.args(["--encoding=UTF8", "--locale=C"]).current_dir("/");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Earlier versions put such a cluster where the server's user could reach it.
        let (uid, gid) = postgres_ids();
        fs::set_permissions(&scratch.0, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&legacy, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&cluster, Some(uid), Some(gid)).unwrap();
        initdb.uid(uid).gid(gid);
    }
    let out = initdb.output().unwrap();
    assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
    let trust_hba = fs::read_to_string(cluster.join("pg_hba.conf")).unwrap();
    fs::write(data.join("CLUSTER_LOCATION"), legacy.display().to_string()).unwrap();

    let mut tally = start(&data).await.ready();
    let cwd = fs::read_link(format!("/proc/{}/cwd", postmaster_of(tally.pid()))).unwrap();
    assert_eq!(cwd, cluster, "the recorded cluster is the one in use");
    assert!(!data.join("pg").exists(), "no second cluster");
    let mode = fs::metadata(data.join("db_password")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(fs::read_to_string(cluster.join("pg_hba.conf.trust")).unwrap(), trust_hba, "initdb's file is kept");
    let hba = fs::read_to_string(cluster.join("pg_hba.conf")).unwrap();
    let rules: Vec<&str> = hba.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()).collect();
    assert!(rules.iter().all(|l| !l.contains("trust")), "no trust left: {rules:?}");
    let without = cluster_options(&data, &cluster).password("");
    assert!(sqlx::PgConnection::connect_with(&without).await.is_err(), "no way in without the password");
    let t = tally.funded_tenant("7.50").await;
    tally.assert_ledger_ok(&data, &cluster).await;
    tally.stop().await;

    // The next start finds it moved, and everything in it.
    let mut tally = start(&data).await.ready();
    assert_eq!(tally.available(t).await, "7.50");
    tally.assert_ledger_ok(&data, &cluster).await;
    tally.stop().await;
}

#[test]
fn reaping_removes_only_provably_abandoned_test_clusters() {
    let tmp = std::env::temp_dir();
    let make = |marker: bool| {
        let d = tmp.join(format!("tally-test-0-{}", Uuid::now_v7().simple()));
        fs::DirBuilder::new().mode(0o700).create(&d).unwrap();
        fs::write(d.join("tally.lock"), "0\n").unwrap();
        if marker {
            fs::write(d.join("tally-ephemeral"), "ephemeral cluster of pid 0\n").unwrap();
        }
        fs::create_dir(d.join("pg")).unwrap();
        d
    };
    let abandoned = make(true);
    let unmarked = make(false);
    let live = make(true);
    let held = fs::OpenOptions::new().write(true).open(live.join("tally.lock")).unwrap();
    // SAFETY: flock on a descriptor we own; held as a live owner would hold it.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&held), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    // A symlink named like ours to a directory that would qualify: never followed.
    let target = tmp.join(format!("tally-embedded-test-target-{}", Uuid::now_v7().simple()));
    fs::DirBuilder::new().mode(0o700).create(&target).unwrap();
    fs::write(target.join("tally.lock"), "0\n").unwrap();
    fs::write(target.join("tally-ephemeral"), "ephemeral cluster of pid 0\n").unwrap();
    fs::create_dir(target.join("pg")).unwrap();
    let link = tmp.join(format!("tally-test-0-{}", Uuid::now_v7().simple()));
    std::os::unix::fs::symlink(&target, &link).unwrap();

    tally::db::embedded::reap_abandoned();
    assert!(!abandoned.exists(), "a marked cluster whose lock is free is removed");
    assert!(unmarked.join("pg").exists(), "no marker: not provably ours");
    assert!(live.join("pg").exists(), "a held lock: its owner lives");
    assert!(target.join("pg").exists() && fs::symlink_metadata(&link).is_ok(), "a symlink is not followed");
    drop(held);
    for d in [&unmarked, &live, &target] {
        fs::remove_dir_all(d).unwrap();
    }
    fs::remove_file(&link).unwrap();
}
