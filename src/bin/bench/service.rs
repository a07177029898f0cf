//! The service under test: the real `tally` binary as a child process.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::scenarios::Batching;
use crate::BoxError;

/// The admin token the bench gives the service.
pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";

pub struct Service {
    child: Child,
    pub batching: Batching,
    pub base: String,
    log: PathBuf,
}

impl Service {
    /// Spawns `tally` on `database_url` with the given batching and waits for `/readyz`.
    pub async fn start(tally: &Path, batching: Batching, database_url: &str, dir: &Path) -> Result<Service, BoxError> {
        Service::start_replica(tally, batching, database_url, dir, "").await
    }

    /// The same, for another replica on the same database: `name` tells its files apart.
    pub async fn start_replica(
        tally: &Path,
        batching: Batching,
        database_url: &str,
        dir: &Path,
        name: &str,
    ) -> Result<Service, BoxError> {
        let addr = free_addr()?;
        let log = dir.join(format!("tally-{}{name}.log", batching.name()));
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(tally);
        cmd.env("DATABASE_URL", database_url)
            .env("TALLY_ADDR", &addr)
            .env("TALLY_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TALLY_CHARGE_BATCHING", batching.name())
            .env("TALLY_DATA_DIR", dir.join(format!("data-{}{name}", batching.name())))
            .env("RUST_LOG", "warn")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: prctl is async-signal-safe; it runs in the forked child only. The service
        // gets SIGTERM if the bench dies, so it never outlives us.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let mut svc = Service { child, batching, base: format!("http://{addr}"), log };
        let started = Instant::now();
        svc.wait_ready().await?;
        eprintln!(
            "[bench] service with batching {} ready at {} in {:.1} s",
            batching.name(),
            svc.base,
            started.elapsed().as_secs_f64()
        );
        Ok(svc)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&mut self) -> Result<(), BoxError> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("{}/readyz", self.base);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("tally exited ({status}) before it was ready:\n{}", self.log_text()).into());
            }
            if let Ok(r) = http.get(&url).send().await {
                if r.status() == reqwest::StatusCode::OK {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("tally not ready after 60 s:\n{}", self.log_text()).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then waits up to 30 s for a graceful exit (SIGKILL after that).
    pub async fn stop(mut self) -> Result<Stopped, BoxError> {
        let started = Instant::now();
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = started + Duration::from_secs(30);
        let (status, killed) = loop {
            if let Some(status) = self.child.try_wait()? {
                break (status, false);
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                break (self.child.wait()?, true);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ok(Stopped { batching: self.batching, status, killed, took: started.elapsed(), log: self.log_text() })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    /// Only on an error path: `stop` has already reaped the child otherwise.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How a service ended, and what it logged (at `warn` and above).
pub struct Stopped {
    batching: Batching,
    status: ExitStatus,
    killed: bool,
    took: Duration,
    log: String,
}

impl Stopped {
    pub fn print(&self) {
        let how = if self.killed { "did NOT stop within 30 s of SIGTERM: killed" } else { "stopped on SIGTERM" };
        let lines: Vec<String> = self.log.lines().map(plain).collect();
        println!(
            "[bench] service with batching {} {how} in {:.2} s ({}); it logged {} line(s) at warn or above",
            self.batching.name(),
            self.took.as_secs_f64(),
            self.status,
            lines.len()
        );
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for l in &lines {
            // Group by message: drop the leading timestamp, and numbers (latencies, ids…).
            let message = l.split_once(' ').map_or(l.as_str(), |(_, rest)| rest);
            *counts.entry(without_numbers(message)).or_default() += 1;
        }
        let mut top: Vec<_> = counts.into_iter().collect();
        top.sort_by_key(|e| std::cmp::Reverse(e.1));
        for (message, n) in top.iter().take(10) {
            println!("[tally] {n:>7} × {message}");
        }
    }
}

/// Every run of digits replaced by `N`.
fn without_numbers(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('N') {
            out.push('N');
        }
    }
    out
}

/// A log line without its ANSI colour codes.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters… final letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A free loopback port (bound, then released for the service to take).
fn free_addr() -> Result<String, BoxError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}
