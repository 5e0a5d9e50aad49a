//! What HTTP binary caches answered, kept on disk between runs as Nix's
//! NAR info disk cache keeps it: each cache's `nix-cache-info` for seven
//! days, each narinfo it had for `narinfo-cache-positive-ttl` seconds and
//! each path it did not have for `narinfo-cache-negative-ttl` seconds. A
//! SQLite file in the store's state directory, shared by every process
//! of that store; a file that cannot be opened or written only costs the
//! questions it would have saved.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use crate::binary_cache::CacheInfo;

/// How long a cache's `nix-cache-info` is believed (Nix's seven days).
pub const CACHE_INFO_TTL: u64 = 7 * 24 * 3600;

/// How often expired answers are deleted from the file (Nix's daily
/// purge).
const PURGE_INTERVAL: u64 = 24 * 3600;

/// What a cache answered for a path, while that answer is still believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remembered {
    /// The cache had it: its narinfo's text.
    Present(String),
    /// The cache did not have it.
    Absent,
}

/// The answers of HTTP caches, on disk.
#[derive(Debug)]
pub struct NarInfoDiskCache {
    conn: Mutex<Connection>,
    positive_ttl: u64,
    negative_ttl: u64,
}

/// The file of the store whose state directory is `state_dir`.
pub fn file_in(state_dir: &Path) -> PathBuf {
    state_dir.join("hermetic/binary-cache-v1.sqlite")
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl NarInfoDiskCache {
    /// Opens (creating it) the disk cache at `file`; answers older than
    /// their TTL are not given and are deleted once a day.
    pub fn open(
        file: &Path,
        positive_ttl: u64,
        negative_ttl: u64,
    ) -> rusqlite::Result<NarInfoDiskCache> {
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(file)?;
        conn.busy_timeout(std::time::Duration::from_secs(60))?;
        conn.execute_batch(
            "pragma journal_mode = wal;
             pragma synchronous = normal;
             create table if not exists caches (
                 url text primary key not null,
                 timestamp integer not null,
                 store_dir text not null,
                 want_mass_query integer not null,
                 priority integer not null);
             create table if not exists narinfos (
                 url text not null,
                 hash_part text not null,
                 narinfo text,
                 timestamp integer not null,
                 primary key (url, hash_part));
             create table if not exists last_purge (timestamp integer not null);",
        )?;
        let cache = NarInfoDiskCache {
            conn: Mutex::new(conn),
            positive_ttl,
            negative_ttl,
        };
        cache.purge_if_due()?;
        Ok(cache)
    }

    fn purge_if_due(&self) -> rusqlite::Result<()> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let now = now();
        let last: Option<i64> = conn
            .query_row("select max(timestamp) from last_purge", [], |r| r.get(0))
            .optional()?
            .flatten();
        if last.is_some_and(|t| t > now - PURGE_INTERVAL as i64) {
            return Ok(());
        }
        conn.execute(
            "delete from narinfos where
                 (narinfo is not null and timestamp < ?1) or
                 (narinfo is null and timestamp < ?2)",
            params![
                now.saturating_sub(self.positive_ttl as i64),
                now.saturating_sub(self.negative_ttl as i64)
            ],
        )?;
        conn.execute(
            "delete from caches where timestamp < ?1",
            [now - CACHE_INFO_TTL as i64],
        )?;
        conn.execute("delete from last_purge", [])?;
        conn.execute("insert into last_purge values (?1)", [now])?;
        Ok(())
    }

    /// The `nix-cache-info` of the cache at `url`, if read within
    /// [`CACHE_INFO_TTL`].
    pub fn cache_info(&self, url: &str) -> Option<CacheInfo> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.query_row(
            "select store_dir, want_mass_query, priority from caches
             where url = ?1 and timestamp > ?2",
            params![url, now() - CACHE_INFO_TTL as i64],
            |row| {
                Ok(CacheInfo {
                    store_dir: row.get(0)?,
                    want_mass_query: row.get(1)?,
                    priority: row.get(2)?,
                })
            },
        )
        .optional()
        .ok()
        .flatten()
    }

    /// Keeps what the cache at `url` says of itself.
    pub fn remember_cache_info(&self, url: &str, info: &CacheInfo) {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let _ = conn.execute(
            "insert or replace into caches values (?1, ?2, ?3, ?4, ?5)",
            params![
                url,
                now(),
                info.store_dir,
                info.want_mass_query,
                info.priority
            ],
        );
    }

    /// What the cache at `url` answered for the path with `hash_part`, if
    /// that answer is still within its TTL.
    pub fn narinfo(&self, url: &str, hash_part: &str) -> Option<Remembered> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let (text, timestamp): (Option<String>, i64) = conn
            .query_row(
                "select narinfo, timestamp from narinfos where url = ?1 and hash_part = ?2",
                params![url, hash_part],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .ok()
            .flatten()?;
        let ttl = if text.is_some() {
            self.positive_ttl
        } else {
            self.negative_ttl
        };
        if timestamp <= now().saturating_sub(ttl as i64) {
            return None;
        }
        Some(text.map_or(Remembered::Absent, Remembered::Present))
    }

    /// Keeps the cache at `url`'s answer for the path with `hash_part`:
    /// its narinfo's text, or `None` when it does not have it.
    pub fn remember_narinfo(&self, url: &str, hash_part: &str, narinfo: Option<&str>) {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let _ = conn.execute(
            "insert or replace into narinfos values (?1, ?2, ?3, ?4)",
            params![url, hash_part, narinfo, now()],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hermetic-narinfo-cache-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn answers_survive_a_reopen_within_their_ttls_and_not_beyond() {
        let dir = scratch("ttl");
        let file = file_in(&dir);
        let url = "http://127.0.0.1:1";
        {
            let cache = NarInfoDiskCache::open(&file, 100, 100).unwrap();
            assert_eq!(cache.narinfo(url, "abc"), None);
            cache.remember_narinfo(url, "abc", Some("StorePath: x\n"));
            cache.remember_narinfo(url, "def", None);
            let info = CacheInfo {
                store_dir: "/nix/store".into(),
                want_mass_query: true,
                priority: 30,
            };
            cache.remember_cache_info(url, &info);
        }
        let cache = NarInfoDiskCache::open(&file, 100, 100).unwrap();
        assert_eq!(
            cache.narinfo(url, "abc"),
            Some(Remembered::Present("StorePath: x\n".into()))
        );
        assert_eq!(cache.narinfo(url, "def"), Some(Remembered::Absent));
        assert_eq!(cache.narinfo("http://other", "abc"), None);
        assert_eq!(cache.cache_info(url).unwrap().priority, 30);
        // A TTL of 0 believes nothing; each TTL applies to its kind.
        let strict = NarInfoDiskCache::open(&file, 0, 100).unwrap();
        assert_eq!(strict.narinfo(url, "abc"), None);
        assert_eq!(strict.narinfo(url, "def"), Some(Remembered::Absent));
        let strict = NarInfoDiskCache::open(&file, 100, 0).unwrap();
        assert!(strict.narinfo(url, "abc").is_some());
        assert_eq!(strict.narinfo(url, "def"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
