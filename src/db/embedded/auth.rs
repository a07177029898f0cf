//! The cluster's password and `pg_hba.conf`: no `trust` for a role that another local
//! account could use.
//!
//! Invariants:
//! - the password is generated once (256 bits), kept in `<data>/db_password` (mode 0600,
//!   in the data directory, which the server's user cannot enter) and never logged;
//! - new clusters get scram-sha-256 for the local socket from `initdb` (TCP: reject);
//! - a cluster of an earlier version, made with `trust`, is moved to a password only while
//!   its `pg_hba.conf` still has exactly the rules `initdb --auth=trust` wrote: the password
//!   is set in single-user mode (no socket, so no `trust` window), the old file is kept as
//!   `pg_hba.conf.trust` (a hard link, so nothing is lost) and the new one is renamed over
//!   it. Each step is repeatable, so an interrupted move finishes at the next start;
//! - a `pg_hba.conf` with `trust` for local connections that is not initdb's is refused
//!   with instructions, never rewritten.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::Stdio;

use super::server::{self, ClusterFd, RunAs};
use super::{random_hex, sync_dir, write_new, EmbeddedError, ROLE};

pub const PASSWORD_FILE: &str = "db_password";
const HOW_TO: &str = "See \"When the embedded database refuses to start\" in the README.";

/// The active rules of `initdb --auth=trust`, whitespace-normalised.
const INITDB_TRUST: [&str; 6] = [
    "local all all trust",
    "host all all 127.0.0.1/32 trust",
    "host all all ::1/128 trust",
    "local replication all trust",
    "host replication all 127.0.0.1/32 trust",
    "host replication all ::1/128 trust",
];

const SCRAM_HBA: &str = "\
# Written by tally when it moved this cluster from trust to password authentication.
# The file initdb wrote is kept as pg_hba.conf.trust. The server listens on no TCP address.
local   all             all                                     scram-sha-256
local   replication     all                                     scram-sha-256
host    all             all             all                     reject
host    replication     all             all                     reject
";

#[derive(Debug, PartialEq, Eq)]
pub enum Hba {
    /// No `local` rule trusts anyone.
    Safe,
    /// Exactly the rules `initdb --auth=trust` wrote.
    InitdbTrust,
    /// `trust` for local connections, in a file changed since initdb.
    ChangedTrust,
}

pub fn classify(text: &str) -> Hba {
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().split_whitespace().collect::<Vec<_>>())
        .filter(|t| !t.is_empty())
        .collect();
    if !lines.iter().any(|t| t[0] == "local" && t.get(3) == Some(&"trust")) {
        return Hba::Safe;
    }
    let joined: Vec<String> = lines.iter().map(|t| t.join(" ")).collect();
    if joined == INITDB_TRUST {
        Hba::InitdbTrust
    } else {
        Hba::ChangedTrust
    }
}

/// The password for a cluster about to be created: the stored one, or a new one.
pub fn password_for_new_cluster(data: &Path) -> Result<String, EmbeddedError> {
    match stored_password(data)? {
        Some(p) => Ok(p),
        None => new_password(data),
    }
}

/// Makes sure the cluster admits no local connection without a password, and returns the
/// password tally logs in with.
pub fn secure(
    bin: &Path,
    data: &Path,
    cluster: &Path,
    fd: &ClusterFd,
    run_as: Option<&RunAs>,
) -> Result<String, EmbeddedError> {
    let hba_path = cluster.join("pg_hba.conf");
    let hba = read_no_follow(&hba_path)?;
    let stored = stored_password(data)?;
    match classify(&hba) {
        Hba::Safe => stored.ok_or_else(|| {
            EmbeddedError::Refused(format!(
                "{} is missing, and the embedded database in {} admits tally only with that password. Nothing \
                 was changed. Restore the file from a backup of this data directory, or set a new password. \
                 {HOW_TO}",
                data.join(PASSWORD_FILE).display(),
                cluster.display()
            ))
        }),
        Hba::ChangedTrust => Err(EmbeddedError::Refused(format!(
            "{} lets local connections in without a password (`trust`), and it is not the file initdb wrote, so \
             tally will not rewrite it: any process running as the server's user could use the database. \
             Nothing was changed. Change the method of its `local` lines to scram-sha-256 after setting the \
             password of the role `{ROLE}` to the contents of {} (or restore initdb's rules, and tally will do \
             both). {HOW_TO}",
            hba_path.display(),
            data.join(PASSWORD_FILE).display()
        ))),
        Hba::InitdbTrust => {
            tracing::warn!(
                "moving the embedded database in {} from trust to password authentication",
                cluster.display()
            );
            let password = match stored {
                Some(p) => p,
                None => new_password(data)?,
            };
            set_password(bin, fd, run_as, &password)?;
            replace_hba(cluster, run_as)?;
            tracing::info!("the old {} is kept as pg_hba.conf.trust", hba_path.display());
            Ok(password)
        }
    }
}

fn stored_password(data: &Path) -> Result<Option<String>, EmbeddedError> {
    let path = data.join(PASSWORD_FILE);
    let mut text = String::new();
    let opened = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path);
    let mut f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EmbeddedError::Io(format!("opening {}: {e}", path.display()))),
    };
    f.read_to_string(&mut text).map_err(|e| EmbeddedError::Io(format!("reading {}: {e}", path.display())))?;
    if f.metadata().is_ok_and(|m| m.mode() & 0o077 != 0) {
        tracing::warn!("{} can be read by other users; it should have mode 0600", path.display());
    }
    let password = text.trim();
    if password.is_empty() || password.contains(['\'', '\\']) {
        return Err(EmbeddedError::Refused(format!(
            "{} is empty or holds a quote or backslash. Nothing was changed. Restore it from a backup. {HOW_TO}",
            path.display()
        )));
    }
    Ok(Some(password.to_string()))
}

fn new_password(data: &Path) -> Result<String, EmbeddedError> {
    let password = random_hex(32);
    let path = data.join(PASSWORD_FILE);
    write_new(&path, format!("{password}\n").as_bytes(), 0o600)
        .map_err(|e| EmbeddedError::Io(format!("writing {}: {e}", path.display())))?;
    Ok(password)
}

/// `ALTER ROLE … PASSWORD` in single-user mode: no socket is open while the cluster still
/// trusts local connections.
fn set_password(bin: &Path, fd: &ClusterFd, run_as: Option<&RunAs>, password: &str) -> Result<(), EmbeddedError> {
    let mut cmd = server::command(bin, "postgres", run_as, fd);
    cmd.arg("--single").arg("-D").arg(fd.data_arg());
    for setting in ["exit_on_error=on", "password_encryption=scram-sha-256", "log_min_error_statement=panic"] {
        cmd.arg("-c").arg(setting);
    }
    cmd.arg("postgres").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let fail = |e: std::io::Error| EmbeddedError::Io(format!("setting the database password: {e}"));
    let mut child = cmd.spawn().map_err(fail)?;
    let sql = format!("ALTER ROLE {ROLE} PASSWORD '{password}';\n");
    let written = child.stdin.take().map(|mut s| s.write_all(sql.as_bytes()));
    let out = child.wait_with_output().map_err(fail)?;
    if !out.status.success() || !matches!(written, Some(Ok(()))) {
        return Err(EmbeddedError::Start(format!(
            "setting the database password in single-user mode failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// Keeps initdb's file as `pg_hba.conf.trust` and puts ours in its place.
fn replace_hba(cluster: &Path, run_as: Option<&RunAs>) -> Result<(), EmbeddedError> {
    let path = cluster.join("pg_hba.conf");
    let backup = cluster.join("pg_hba.conf.trust");
    let fail = |e: std::io::Error| EmbeddedError::Io(format!("replacing {}: {e}", path.display()));
    match fs::hard_link(&path, &backup) {
        Ok(()) => {}
        // An earlier, interrupted move already kept it.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if classify(&read_no_follow(&backup)?) != Hba::InitdbTrust {
                return Err(EmbeddedError::Refused(format!(
                    "{} must become a copy of initdb's pg_hba.conf, but a different file of that name exists. \
                     Nothing was changed. Move it aside and start again.",
                    backup.display()
                )));
            }
        }
        Err(e) => return Err(fail(e)),
    }
    let tmp = cluster.join(format!("pg_hba.conf.tally-{}", random_hex(6)));
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(fail)?;
    let written = (|| {
        if let Some(u) = run_as {
            std::os::unix::fs::fchown(&f, Some(u.uid), Some(u.gid))?;
        }
        f.write_all(SCRAM_HBA.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        sync_dir(cluster)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(fail)
}

fn read_no_follow(path: &Path) -> Result<String, EmbeddedError> {
    let mut text = String::new();
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| EmbeddedError::Io(format!("reading {}: {e}", path.display())))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INITDB_TRUST_FILE: &str = "\
# PostgreSQL Client Authentication Configuration File
# TYPE  DATABASE        USER            ADDRESS                 METHOD

# \"local\" is for Unix domain socket connections only
local   all             all                                     trust
# IPv4 local connections:
host    all             all             127.0.0.1/32            trust
# IPv6 local connections:
host    all             all             ::1/128                 trust
# Allow replication connections from localhost, by a user with the
# replication privilege.
local   replication     all                                     trust
host    replication     all             127.0.0.1/32            trust
host    replication     all             ::1/128                 trust
";

    #[test]
    fn initdb_trust_file_is_recognised() {
        assert_eq!(classify(INITDB_TRUST_FILE), Hba::InitdbTrust);
        let recommented = INITDB_TRUST_FILE.replace("# IPv4 local connections:", "# edited comment");
        assert_eq!(classify(&recommented), Hba::InitdbTrust, "comments do not change the rules");
    }

    #[test]
    fn changed_trust_file_is_not_initdbs() {
        let extra = format!("{INITDB_TRUST_FILE}local all backup peer\n");
        assert_eq!(classify(&extra), Hba::ChangedTrust);
        let fewer =
            INITDB_TRUST_FILE.replace("host    all             all             ::1/128                 trust", "");
        assert_eq!(classify(&fewer), Hba::ChangedTrust);
        assert_eq!(classify("local all tally trust\n"), Hba::ChangedTrust);
    }

    #[test]
    fn password_rules_are_not_trust() {
        assert_eq!(classify(SCRAM_HBA), Hba::Safe);
        assert_eq!(classify(&INITDB_TRUST_FILE.replace("trust", "scram-sha-256")), Hba::Safe);
        // `trust` for TCP only: the server listens on no TCP address.
        assert_eq!(classify("local all all scram-sha-256\nhost all all 127.0.0.1/32 trust\n"), Hba::Safe);
        assert_eq!(classify(""), Hba::Safe);
    }
}
