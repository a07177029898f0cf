//! The running server: a child process we started, watched by a thread of its own.
//!
//! Invariants:
//! - the thread that spawned the server lives exactly as long as the server, because the
//!   server's PR_SET_PDEATHSIG fires when that thread ends;
//! - we signal only our own child, and only before it is reaped: the watcher waits for the
//!   exit without reaping (`waitid(WNOWAIT)`), then reaps under the lock that `signal`
//!   takes. An exited but unreaped child keeps its pid, so the pid we signal cannot belong
//!   to another process. No pid is ever read from a file.

use std::process::{Child, Command};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

pub struct Supervised {
    shared: Arc<Shared>,
}

struct Shared {
    /// `Some` until the child is reaped.
    child: Mutex<Option<Child>>,
    reaped: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Supervised {
    pub fn spawn(mut cmd: Command) -> std::io::Result<Supervised> {
        let shared = Arc::new(Shared { child: Mutex::new(None), reaped: Condvar::new() });
        let watcher = shared.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("embedded-postgres".into()).spawn(move || {
            let child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let pid = child.id();
            *watcher.lock() = Some(child);
            let _ = tx.send(Ok(()));
            wait_without_reaping(pid);
            if let Some(mut c) = watcher.lock().take() {
                let _ = c.wait();
            }
            watcher.reaped.notify_all();
        })?;
        rx.recv().map_err(|_| std::io::Error::other("the postgres thread died"))??;
        Ok(Supervised { shared })
    }

    pub fn running(&self) -> bool {
        self.shared.lock().is_some()
    }

    /// Sends `sig` to the child unless it has been reaped; says whether it was sent.
    pub fn signal(&self, sig: i32) -> bool {
        let guard = self.shared.lock();
        match guard.as_ref() {
            Some(c) => {
                // SAFETY: kill(2) on our own unreaped child (see the module's invariants).
                unsafe { libc::kill(c.id() as libc::pid_t, sig) };
                true
            }
            None => false,
        }
    }

    /// Waits up to `timeout` for the child to exit; says whether it did.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let guard = self.shared.lock();
        let (guard, _) =
            self.shared.reaped.wait_timeout_while(guard, timeout, |c| c.is_some()).unwrap_or_else(|e| e.into_inner());
        guard.is_none()
    }
}

/// Blocks until `pid` has exited, leaving it to be reaped.
fn wait_without_reaping(pid: u32) {
    loop {
        // SAFETY: waitid writes only into `info`, which we own.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}
