//! Nix's registry of valid paths: `<state>/db/db.sqlite` with Nix's schema
//! (version 10), opened with Nix's settings (foreign keys, WAL journal,
//! normal sync, an hour's busy timeout), so Nix and hermetic share it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::error::{StoreError, io_err};
use crate::hash::Hash;
use crate::path::{StoreDir, StorePath};

/// The schema version of Nix 2.8's database.
pub const SCHEMA_VERSION: u32 = 10;

const SCHEMA: &str = "
create table if not exists ValidPaths (
    id               integer primary key autoincrement not null,
    path             text unique not null,
    hash             text not null,
    registrationTime integer not null,
    deriver          text,
    narSize          integer,
    ultimate         integer,
    sigs             text,
    ca               text
);
create table if not exists Refs (
    referrer  integer not null,
    reference integer not null,
    primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict
);
create index if not exists IndexReferrer on Refs(referrer);
create index if not exists IndexReference on Refs(reference);
create trigger if not exists DeleteSelfRefs before delete on ValidPaths
  begin
    delete from Refs where referrer = old.id and reference = old.id;
  end;
create table if not exists DerivationOutputs (
    drv  integer not null,
    id   text not null,
    path text not null,
    primary key (drv, id),
    foreign key (drv) references ValidPaths(id) on delete cascade
);
create index if not exists IndexDerivationOutputs on DerivationOutputs(path);
";

/// What the registry knows of a valid path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// The path.
    pub path: StorePath,
    /// SHA-256 of its NAR serialisation.
    pub nar_hash: Hash,
    /// Size of its NAR serialisation.
    pub nar_size: u64,
    /// Store paths it refers to (itself included if it does).
    pub references: BTreeSet<StorePath>,
    /// The derivation that built it, if known.
    pub deriver: Option<StorePath>,
    /// When it was registered (seconds since the epoch).
    pub registration_time: i64,
    /// Its content address (`fixed:r:sha256:…`, `text:sha256:…`), if any.
    pub ca: Option<String>,
    /// Signatures.
    pub sigs: Vec<String>,
    /// Whether it was built locally ("ultimately trusted").
    pub ultimate: bool,
}

/// A path to register, with what it records beside its row.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The path and its metadata.
    pub info: PathInfo,
    /// For a derivation, its outputs as its own text computes them
    /// (`DerivationOutputs`); empty for anything else.
    pub drv_outputs: Vec<(String, StorePath)>,
}

/// An open registry.
pub struct Db {
    conn: Connection,
    file: PathBuf,
    store: StoreDir,
}

fn schema_version(path: &Path) -> Result<u32, StoreError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse().unwrap_or(0)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

impl Db {
    /// Opens (creating if new) the registry in `<state>/db`. The caller
    /// holds the big lock.
    pub fn open(db_dir: &Path, store: StoreDir) -> Result<Self, StoreError> {
        let schema_file = db_dir.join("schema");
        let version = schema_version(&schema_file)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version != 0 && version < SCHEMA_VERSION {
            return Err(StoreError::SchemaTooOld(db_dir.to_owned()));
        }
        let file = db_dir.join("db.sqlite");
        let db_err = |op| {
            let file = file.clone();
            move |source| StoreError::Db {
                op,
                path: file,
                source,
            }
        };
        let conn = Connection::open_with_flags(
            &file,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err("open the database"))?;
        conn.busy_timeout(std::time::Duration::from_secs(3600))
            .map_err(db_err("set the busy timeout"))?;
        conn.execute_batch("pragma foreign_keys = 1; pragma synchronous = normal;")
            .map_err(db_err("set pragmas"))?;
        let mode: String = conn
            .query_row("pragma main.journal_mode", [], |r| r.get(0))
            .map_err(db_err("read the journal mode"))?;
        if mode != "wal" {
            let _: String = conn
                .query_row("pragma main.journal_mode = wal", [], |r| r.get(0))
                .map_err(db_err("set the journal mode"))?;
        }
        conn.execute_batch("pragma wal_autocheckpoint = 40000;")
            .map_err(db_err("set pragmas"))?;
        if version == 0 {
            conn.execute_batch(SCHEMA)
                .map_err(db_err("create the schema"))?;
            let fresh = db_dir.join(".schema.new");
            fs::write(&fresh, SCHEMA_VERSION.to_string()).map_err(io_err("write", &fresh))?;
            fs::rename(&fresh, &schema_file).map_err(io_err("rename", &fresh))?;
        }
        Ok(Self { conn, file, store })
    }

    fn err(&self, op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        let path = self.file.clone();
        move |source| StoreError::Db { op, path, source }
    }

    fn id_of(&self, path: &StorePath) -> Result<Option<i64>, StoreError> {
        self.conn
            .prepare_cached("select id from ValidPaths where path = ?1")
            .and_then(|mut s| {
                s.query_row([self.store.print(path)], |r| r.get(0))
                    .optional()
            })
            .map_err(self.err("look up a path"))
    }

    /// Whether a path is registered as valid.
    pub fn is_valid(&self, path: &StorePath) -> Result<bool, StoreError> {
        Ok(self.id_of(path)?.is_some())
    }

    fn parse_path(&self, text: &str) -> Option<StorePath> {
        self.store.parse(text).ok()
    }

    /// What the registry knows of a path, or `None` if it is not valid.
    pub fn query_info(&self, path: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        type Row = (
            i64,
            String,
            i64,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<String>,
        );
        let row: Option<Row> = self
            .conn
            .prepare_cached(
                "select id, hash, registrationTime, deriver, narSize, ultimate, sigs, ca \
                 from ValidPaths where path = ?1",
            )
            .and_then(|mut s| {
                s.query_row([self.store.print(path)], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ))
                })
                .optional()
            })
            .map_err(self.err("query a path"))?;
        let Some((id, hash, time, deriver, size, ultimate, sigs, ca)) = row else {
            return Ok(None);
        };
        let nar_hash = Hash::parse(&hash, Some(crate::hash::HashAlgo::Sha256)).map_err(|e| {
            StoreError::Db {
                op: "read a NAR hash",
                path: self.file.clone(),
                source: rusqlite::Error::InvalidColumnType(
                    1,
                    e.to_string(),
                    rusqlite::types::Type::Text,
                ),
            }
        })?;
        Ok(Some(PathInfo {
            path: path.clone(),
            nar_hash,
            nar_size: size.unwrap_or(0) as u64,
            references: self.references_of(id)?,
            deriver: deriver.as_deref().and_then(|d| self.parse_path(d)),
            registration_time: time,
            ca,
            sigs: sigs
                .map(|s| {
                    s.split(' ')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            ultimate: ultimate.unwrap_or(0) != 0,
        }))
    }

    fn references_of(&self, id: i64) -> Result<BTreeSet<StorePath>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "select path from Refs join ValidPaths on reference = id where referrer = ?1",
            )
            .map_err(self.err("query references"))?;
        let rows = stmt
            .query_map([id], |r| r.get::<_, String>(0))
            .map_err(self.err("query references"))?;
        let mut out = BTreeSet::new();
        for row in rows {
            let text = row.map_err(self.err("query references"))?;
            out.extend(self.parse_path(&text));
        }
        Ok(out)
    }

    /// The valid path whose hash part is `hash_part`, if any.
    pub fn path_from_hash_part(&self, hash_part: &str) -> Result<Option<StorePath>, StoreError> {
        let prefix = format!("{}/{hash_part}", self.store.as_str());
        let found: Option<String> = self
            .conn
            .prepare_cached("select path from ValidPaths where path >= ?1 limit 1")
            .and_then(|mut s| s.query_row([&prefix], |r| r.get(0)).optional())
            .map_err(self.err("look up a hash part"))?;
        Ok(found
            .filter(|p| p.starts_with(&format!("{prefix}-")))
            .and_then(|p| self.parse_path(&p)))
    }

    /// Makes `path` invalid, in one transaction, unless another valid path
    /// refers to it (Nix's `invalidatePathChecked`); its references and
    /// derivation outputs go with its row. A path that is not valid is
    /// left as it is.
    pub fn invalidate(&mut self, path: &StorePath) -> Result<(), StoreError> {
        self.invalidate_all(std::slice::from_ref(path))
    }

    /// Makes `paths` invalid in this order, all in one transaction, or none
    /// of them: each must have no valid referrer but itself and the paths
    /// before it.
    pub fn invalidate_all(&mut self, paths: &[StorePath]) -> Result<(), StoreError> {
        let store = self.store.clone();
        let file = self.file.clone();
        let err = |op| db_err(&file, op);
        let _writing = in_process_writer();
        let tx = begin_write(&mut self.conn, &file)?;
        for path in paths {
            let printed = store.print(path);
            let users: Vec<String> = {
                let mut stmt = tx
                    .prepare_cached(
                        "select r.path from ValidPaths p join Refs on Refs.reference = p.id \
                         join ValidPaths r on Refs.referrer = r.id \
                         where p.path = ?1 and r.id != p.id order by r.path",
                    )
                    .map_err(err("query referrers"))?;
                let rows = stmt
                    .query_map([&printed], |r| r.get::<_, String>(0))
                    .map_err(err("query referrers"))?;
                rows.collect::<Result<_, _>>()
                    .map_err(err("query referrers"))?
            };
            if !users.is_empty() {
                let quoted: Vec<String> = users.iter().map(|u| format!("'{u}'")).collect();
                return Err(StoreError::PathInUse {
                    path: printed,
                    users: quoted.join(", "),
                });
            }
            tx.prepare_cached("delete from ValidPaths where path = ?1")
                .and_then(|mut s| s.execute([&printed]))
                .map_err(err("invalidate a path"))?;
        }
        tx.commit().map_err(err("commit a transaction"))
    }

    /// The valid paths that refer to `path`.
    pub fn referrers(&self, path: &StorePath) -> Result<BTreeSet<StorePath>, StoreError> {
        let Some(id) = self.id_of(path)? else {
            return Ok(BTreeSet::new());
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "select path from Refs join ValidPaths on referrer = id where reference = ?1",
            )
            .map_err(self.err("query referrers"))?;
        let rows = stmt
            .query_map([id], |r| r.get::<_, String>(0))
            .map_err(self.err("query referrers"))?;
        let mut out = BTreeSet::new();
        for row in rows {
            out.extend(self.parse_path(&row.map_err(self.err("query referrers"))?));
        }
        Ok(out)
    }

    /// The outputs registered for a derivation.
    pub fn derivation_outputs(
        &self,
        drv: &StorePath,
    ) -> Result<Vec<(String, StorePath)>, StoreError> {
        let Some(id) = self.id_of(drv)? else {
            return Ok(Vec::new());
        };
        let mut stmt = self
            .conn
            .prepare_cached("select id, path from DerivationOutputs where drv = ?1 order by id")
            .map_err(self.err("query derivation outputs"))?;
        let rows = stmt
            .query_map([id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(self.err("query derivation outputs"))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, path) = row.map_err(self.err("query derivation outputs"))?;
            out.extend(self.parse_path(&path).map(|p| (name, p)));
        }
        Ok(out)
    }

    /// The valid derivations that have `path` among their outputs.
    pub fn valid_derivers(&self, path: &StorePath) -> Result<BTreeSet<StorePath>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "select v.path from DerivationOutputs d join ValidPaths v on d.drv = v.id \
                 where d.path = ?1",
            )
            .map_err(self.err("query valid derivers"))?;
        let rows = stmt
            .query_map([self.store.print(path)], |r| r.get::<_, String>(0))
            .map_err(self.err("query valid derivers"))?;
        let mut out = BTreeSet::new();
        for row in rows {
            out.extend(self.parse_path(&row.map_err(self.err("query valid derivers"))?));
        }
        Ok(out)
    }

    /// Adds signatures to a valid path's, keeping those it has (each once).
    /// Returns false if the path is not valid.
    pub fn add_signatures(&self, path: &StorePath, sigs: &[String]) -> Result<bool, StoreError> {
        let Some(info) = self.query_info(path)? else {
            return Ok(false);
        };
        let mut all: Vec<String> = info.sigs;
        for sig in sigs {
            if !all.contains(sig) {
                all.push(sig.clone());
            }
        }
        let _writing = in_process_writer();
        self.conn
            .prepare_cached("update ValidPaths set sigs = ?1 where path = ?2")
            .and_then(|mut s| s.execute((all.join(" "), self.store.print(path))))
            .map_err(self.err("add signatures"))?;
        Ok(true)
    }

    /// Every valid path with its NAR hash text and size.
    pub fn all_valid(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("select path, hash, narSize from ValidPaths order by path")
            .map_err(self.err("list valid paths"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get::<_, Option<i64>>(2)?.unwrap_or(0) as u64,
                ))
            })
            .map_err(self.err("list valid paths"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.err("list valid paths"))
    }

    /// Registers paths in one transaction: their rows, then their
    /// references (valid paths, or paths of this same set, so outputs may
    /// refer to each other), then, for each derivation among them, its
    /// outputs. The caller has checked what it registers (`LocalStore`'s
    /// admission checks); this only writes.
    pub fn register_all(&mut self, items: &[Registration]) -> Result<(), StoreError> {
        let store = self.store.clone();
        let file = self.file.clone();
        let err = |op| db_err(&file, op);
        let _writing = in_process_writer();
        let tx = begin_write(&mut self.conn, &file)?;
        let mut ids = Vec::with_capacity(items.len());
        for Registration { info, .. } in items {
            tx.execute(
                "insert into ValidPaths (path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca) \
                 values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    store.print(&info.path),
                    info.nar_hash.to_prefixed_hex(),
                    info.registration_time,
                    info.deriver.as_ref().map(|d| store.print(d)),
                    info.nar_size as i64,
                    info.ultimate.then_some(1),
                    (!info.sigs.is_empty()).then(|| info.sigs.join(" ")),
                    info.ca,
                ],
            )
            .map_err(err("register a path"))?;
            ids.push(tx.last_insert_rowid());
        }
        for (Registration { info, .. }, id) in items.iter().zip(&ids) {
            for reference in &info.references {
                let reference_id: Option<i64> = tx
                    .query_row(
                        "select id from ValidPaths where path = ?1",
                        [store.print(reference)],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(err("look up a reference"))?;
                let Some(reference_id) = reference_id else {
                    return Err(StoreError::InvalidReference {
                        path: store.print(&info.path),
                        reference: store.print(reference),
                    });
                };
                tx.execute(
                    "insert or replace into Refs (referrer, reference) values (?1, ?2)",
                    params![id, reference_id],
                )
                .map_err(err("register a reference"))?;
            }
        }
        for (Registration { drv_outputs, .. }, drv_id) in items.iter().zip(&ids) {
            for (name, path) in drv_outputs {
                tx.execute(
                    "insert or replace into DerivationOutputs (drv, id, path) values (?1, ?2, ?3)",
                    params![drv_id, name, store.print(path)],
                )
                .map_err(err("register a derivation output"))?;
            }
        }
        tx.commit().map_err(err("commit a registration"))
    }
}

/// Wraps a registry error with its operation and the database file.
fn db_err(file: &Path, op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + use<> {
    let path = file.to_owned();
    move |source| StoreError::Db { op, path, source }
}

/// Begins a transaction that takes the database's write lock at once.
fn begin_write<'c>(
    conn: &'c mut Connection,
    file: &Path,
) -> Result<rusqlite::Transaction<'c>, StoreError> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db_err(file, "begin a transaction"))
}

/// Held while this process writes to the database. SQLite lets one
/// writer in at a time and makes the others sleep and retry (its busy
/// handler sleeps up to tens of milliseconds); threads of one process
/// (parallel fetches, parallel builds) wait here for each other instead,
/// woken as soon as the writer before them is done.
fn in_process_writer() -> std::sync::MutexGuard<'static, ()> {
    static WRITER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    WRITER.lock().unwrap_or_else(|e| e.into_inner())
}
