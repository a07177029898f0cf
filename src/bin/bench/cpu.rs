//! Where the CPU went during a scenario, from `/proc`: the service, PostgreSQL (the
//! postmaster and its children), the bench itself, and anything else on the machine. They
//! all share the CPUs, so this says how much of the figures is the load generator's own
//! cost, and whether something else (a compiler, another test) was disturbing the run.

use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc` times (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU time counters at one moment.
#[derive(Clone, Copy)]
pub struct Sample {
    at: Instant,
    busy: u64,
    service: u64,
    postgres: u64,
    bench: u64,
}

/// Average cores busy over an interval.
#[derive(Clone, Copy, Default)]
pub struct Usage {
    pub busy: f64,
    pub service: f64,
    pub postgres: f64,
    pub bench: f64,
}

impl Usage {
    /// Cores used by processes that are neither the service, PostgreSQL nor the bench.
    pub fn others(&self) -> f64 {
        (self.busy - self.service - self.postgres - self.bench).max(0.0)
    }
}

impl Sample {
    pub fn take(service_pid: u32, postmaster_pid: u32) -> Sample {
        Sample {
            at: Instant::now(),
            busy: machine_busy().unwrap_or(0),
            service: process_ticks(&format!("/proc/{service_pid}/stat")).map_or(0, |(t, _)| t),
            postgres: postgres_ticks(postmaster_pid),
            bench: process_ticks("/proc/self/stat").map_or(0, |(t, _)| t),
        }
    }

    /// Cores used since `self`.
    pub fn until(&self, later: &Sample) -> Usage {
        let secs = later.at.duration_since(self.at).max(Duration::from_millis(1)).as_secs_f64();
        let cores = |a: u64, b: u64| b.saturating_sub(a) as f64 / TICKS / secs;
        Usage {
            busy: cores(self.busy, later.busy),
            service: cores(self.service, later.service),
            postgres: cores(self.postgres, later.postgres),
            bench: cores(self.bench, later.bench),
        }
    }
}

/// Non-idle ticks of all CPUs (`/proc/stat`: user nice system idle iowait irq softirq steal).
fn machine_busy() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).take(8).filter_map(|f| f.parse().ok()).collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some(total - idle)
}

/// The postmaster and its children (backends, checkpointer, WAL writer…). A backend that
/// exits between two samples takes its ticks with it; the pools keep theirs open.
fn postgres_ticks(postmaster: u32) -> u64 {
    let own = process_ticks(&format!("/proc/{postmaster}/stat")).map_or(0, |(t, _)| t);
    let Ok(procs) = std::fs::read_dir("/proc") else { return own };
    let children = procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| process_ticks(&format!("/proc/{pid}/stat")))
        .filter(|(_, parent)| *parent == postmaster)
        .map(|(t, _)| t);
    own + children.sum::<u64>()
}

/// utime + stime of a process (all its threads) and its parent's pid, from `/proc/<pid>/stat`.
pub fn process_ticks(path: &str) -> Option<(u64, u32)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces; fields resume after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state, ppid (field 4 of the line), … utime, stime (fields 14, 15).
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((ticks, fields.get(1)?.parse().ok()?))
}

/// The pid of the postmaster that runs the backend at `backend_pid`.
pub fn parent_of(backend_pid: u32) -> Option<u32> {
    process_ticks(&format!("/proc/{backend_pid}/stat")).map(|(_, parent)| parent)
}

/// Cores busy on the whole machine over `d` (sampled before the run starts).
pub fn machine_load(d: std::time::Duration) -> f64 {
    let before = machine_busy().unwrap_or(0);
    std::thread::sleep(d);
    let after = machine_busy().unwrap_or(0);
    after.saturating_sub(before) as f64 / TICKS / d.as_secs_f64()
}
