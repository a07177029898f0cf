//! Where a data directory's cluster is, and whether it can be used as it is.
//!
//! Invariants:
//! - the place is recorded in `<data>/CLUSTER_LOCATION` once a cluster exists, and the
//!   record is honoured: it names the directory that holds the cluster as `pg`, relative
//!   to the data directory (`.`, what this version writes: the cluster is `<data>/pg`) or
//!   absolute (what earlier versions wrote for a cluster under /var/lib/tally-embedded);
//! - a recorded cluster that is missing or empty is an error, never a fresh `initdb`; so is
//!   a record naming a cluster elsewhere while `<data>/pg` exists too (earlier versions
//!   could make both), since only the user knows which holds the data;
//! - a cluster that exists but is damaged (no `PG_VERSION` beside other files, not a
//!   directory, another major version, another owner) is an error that says what is
//!   wrong and how to recover; this module only reads, so nothing is touched.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::server::Owner;
use super::{write_new, EmbeddedError};

pub const RECORD: &str = "CLUSTER_LOCATION";
const HOW_TO: &str = "See \"When the embedded database refuses to start\" in the README.";

pub struct Location {
    /// The cluster directory.
    pub cluster: PathBuf,
    /// Whether `CLUSTER_LOCATION` names it (a cluster was created or adopted here before).
    pub recorded: bool,
}

pub enum State {
    /// No such directory, and none recorded: create it.
    Missing,
    /// An empty directory the server's user owns, not recorded: initialise it in place.
    Empty,
    /// A cluster of the binaries' major version, owned by the server's user.
    Ready,
}

pub fn locate(data: &Path) -> Result<Location, EmbeddedError> {
    let record = data.join(RECORD);
    match fs::read_to_string(&record) {
        Ok(text) => {
            let named = text.trim();
            if named.is_empty() {
                return Err(EmbeddedError::Refused(format!(
                    "{} is empty, so tally cannot tell where this data directory's database is. Nothing was \
                     changed. Write the directory that holds the cluster as `pg` into it (`.` for {}/pg). {HOW_TO}",
                    record.display(),
                    data.display()
                )));
            }
            let holder: PathBuf = data.join(named).components().filter(|c| *c != Component::CurDir).collect();
            let cluster = holder.join("pg");
            let local = data.join("pg");
            if cluster != local && fs::symlink_metadata(&local).is_ok() {
                // Earlier versions chose between the two by permissions at each start, so
                // either may hold the latest data: only the user can tell.
                return Err(EmbeddedError::Refused(format!(
                    "this data directory has two embedded databases: {record} names {cluster}, and there is \
                     also {local}. Tally cannot tell which one holds your data. Nothing was changed. To use \
                     {local}, write `.` into {record}; to use {cluster}, move {local} aside. {HOW_TO}",
                    record = record.display(),
                    cluster = cluster.display(),
                    local = local.display()
                )));
            }
            Ok(Location { cluster, recorded: true })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(Location { cluster: data.join("pg"), recorded: false })
        }
        Err(e) => Err(EmbeddedError::Io(format!("reading {}: {e}", record.display()))),
    }
}

/// Records that the cluster is `<data>/pg`.
pub fn record(data: &Path) -> Result<(), EmbeddedError> {
    write_new(&data.join(RECORD), b".\n", 0o644)
        .map_err(|e| EmbeddedError::Io(format!("writing {}: {e}", data.join(RECORD).display())))
}

pub fn examine(data: &Path, loc: &Location, major: &str, owner: &Owner) -> Result<State, EmbeddedError> {
    let c = &loc.cluster;
    let meta = match fs::metadata(c) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && loc.recorded => {
            return Err(recorded_missing(data, c, "does not exist"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::Missing),
        Err(e) => return Err(EmbeddedError::Io(format!("examining {}: {e}", c.display()))),
    };
    if !meta.is_dir() {
        return Err(EmbeddedError::Refused(format!(
            "the embedded database's place, {}, is not a directory. Nothing was changed. Move it aside if it \
             does not belong there. {HOW_TO}",
            c.display()
        )));
    }
    let entries: Vec<String> = fs::read_dir(c)
        .and_then(|d| d.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect())
        .map_err(|e| EmbeddedError::Io(format!("reading {}: {e}", c.display())))?;
    let version = match fs::read_to_string(c.join("PG_VERSION")) {
        Ok(v) => v.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match (entries.is_empty(), loc.recorded) {
                (true, true) => Err(recorded_missing(data, c, "is empty")),
                (true, false) if meta.uid() == owner.uid => Ok(State::Empty),
                (true, false) => Err(EmbeddedError::Refused(format!(
                    "{} exists and is empty, but tally did not create it and it does not belong to the server's \
                     user ({}), so tally will not take it over. Nothing was changed. Remove it (`rmdir {0}`) and \
                     tally will create the cluster there, or give it to that user (`chown {1} {0}`). {HOW_TO}",
                    c.display(),
                    owner.name
                ))),
                (false, _) => Err(damaged(c, &entries, major, owner)),
            };
        }
        Err(e) => return Err(EmbeddedError::Io(format!("reading {}: {e}", c.join("PG_VERSION").display()))),
    };
    if version != major {
        return Err(EmbeddedError::Refused(format!(
            "the embedded database in {} was created by PostgreSQL {version}, but the PostgreSQL binaries found \
             are version {major}. Nothing was changed. Point TALLY_PG_BIN_DIR at PostgreSQL {version}'s bin \
             directory (Debian: `apt-get install postgresql-{version}`), or upgrade the cluster with pg_upgrade.",
            c.display()
        )));
    }
    if meta.uid() != owner.uid {
        return Err(EmbeddedError::Refused(format!(
            "the embedded database in {} belongs to uid {}, but its server runs as {} (uid {}), and PostgreSQL \
             only runs a cluster its user owns. Nothing was changed. If this is the right cluster, give it to \
             that user: `chown -R {} {0}`. {HOW_TO}",
            c.display(),
            meta.uid(),
            owner.name,
            owner.uid,
            if owner.root { format!("{0}:{0}", owner.name) } else { owner.uid.to_string() }
        )));
    }
    Ok(State::Ready)
}

/// Said of a cluster that lives outside its data directory (made by an earlier version).
pub fn outside_note(data: &Path, cluster: &Path) -> String {
    format!(
        "the embedded database of {data} lives in {cluster} (recorded in {data}/{RECORD} by an earlier version \
         of tally): deleting the data directory will not delete it. To keep it with the data directory, stop \
         tally, then `mv {cluster} {data}/pg && echo . > {data}/{RECORD}`",
        data = data.display(),
        cluster = cluster.display()
    )
}

fn recorded_missing(data: &Path, cluster: &Path, what: &str) -> EmbeddedError {
    EmbeddedError::Refused(format!(
        "the embedded database of {data} is missing: {data}/{RECORD} records it in {cluster}, which {what}. Tally \
         will not create a new, empty database in its place. Nothing was changed. If it was moved, put it back; \
         if it is on a disk that is not mounted, mount it; if it is gone for good and you want to start over \
         with an empty database, move the data directory aside (`mv {data} {data}.old`). {HOW_TO}",
        data = data.display(),
        cluster = cluster.display()
    ))
}

fn damaged(cluster: &Path, entries: &[String], major: &str, owner: &Owner) -> EmbeddedError {
    let mut shown: Vec<&str> = entries.iter().map(String::as_str).collect();
    shown.sort_unstable();
    let more = if shown.len() > 8 { ", …" } else { "" };
    shown.truncate(8);
    let c = cluster.display();
    let chown = if owner.root { format!(" && chown {0}:{0} {c}/PG_VERSION", owner.name) } else { String::new() };
    EmbeddedError::Refused(format!(
        "the embedded database in {c} is damaged: PG_VERSION is missing, but the directory is not empty ({} \
         entries: {}{more}). Tally will not initialise over it or remove it. Nothing was changed. If PG_VERSION \
         was removed by mistake, put it back (it holds the major version: `echo {major} > {c}/PG_VERSION{chown}`) \
         and start again; otherwise restore {c} from a backup. {HOW_TO}",
        entries.len(),
        shown.join(", ")
    ))
}
