//! The embedded store: one SQLite file, one table of keys, transactions that
//! take the write lock up front so concurrent hooks serialise cleanly.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{named_params, params, Connection, OptionalExtension, TransactionBehavior};

use super::{Compare, LeaseId, Op, Result, Store, StoreError};

/// The layout of the file (its tables), as `PRAGMA user_version`: 1 is
/// `kv` with its lease column and `leases`. The keyspace inside has its own
/// version (`<prefix>/schema`, see `crate::migrate`).
pub const FILE_FORMAT: u32 = 1;

pub struct SqliteStore {
    path: PathBuf,
    connection: Mutex<Connection>,
    /// The database file and its shared-memory file as opened.
    files: Option<[(u64, u64); 2]>,
}

/// The database file's and its `-shm` file's identities (device, inode).
fn file_identities(path: &Path) -> Option<[(u64, u64); 2]> {
    use std::os::unix::fs::MetadataExt;
    let id = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    Some([id(path)?, id(Path::new(&shm))?])
}

/// SQLite's message, with what to do where the operator must act: a
/// damaged file, or one that cannot be written.
fn explain(e: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode;
    let remedy = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            "the state file is damaged: restore it from a backup, or move it aside to start with an empty store (running containers keep their interfaces, but their addresses are no longer reserved: run macvlan gc after)"
        }
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            "the state file and its directory must be writable by root (a read-only filesystem, or wrong ownership?)"
        }
        Some(ErrorCode::DiskFull) => "the filesystem holding the state file is full",
        _ => return e.to_string(),
    };
    format!("{e}; {remedy}")
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let fail = |message: String| StoreError::Backend {
            location: format!("sqlite://{}", path.display()),
            message,
        };
        // Created 0600 before SQLite opens it (SQLite gives the WAL and
        // shared-memory files the database's mode); another opener may
        // have won the race, which is fine. Its directory is made only
        // when missing.
        use std::os::unix::fs::OpenOptionsExt;
        let create = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(crate::files::PRIVATE)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
        };
        let in_wal_mode = match crate::files::in_dir(path, create) {
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => in_wal_mode(path),
            Err(e) => return Err(fail(format!("cannot create {}: {e}", path.display()))),
        };
        let at =
            |step: &'static str| move |e: rusqlite::Error| fail(format!("{step}: {}", explain(&e)));
        let connection = Connection::open(path).map_err(at("open"))?;
        // Many hooks start at once (32 containers in parallel is a test):
        // wait for the lock instead of failing with SQLITE_BUSY.
        connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(at("set the busy timeout"))?;
        // Every hook is a short-lived process. By default the last
        // connection to close checkpoints the WAL (two fsyncs) and deletes
        // it, and the next hook recreates it: milliseconds per container.
        // So leave the WAL in place (commits in WAL mode with
        // synchronous=NORMAL need no fsync) — but the next opener that finds
        // no other connection rebuilds the WAL index by reading the whole
        // WAL, so checkpoint early (every 32 pages) to keep that read short.
        connection
            .set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                true,
            )
            .map_err(at("keep the WAL at close"))?;
        // WAL mode is kept in the file; asking for it again costs a hook
        // about 0.1 ms (docs/hook-timing.md), so only a file not yet in it.
        if !in_wal_mode {
            set_wal_mode(&connection).map_err(at("set WAL mode"))?;
        }
        connection
            .execute_batch(
                "PRAGMA synchronous = NORMAL;
                 PRAGMA wal_autocheckpoint = 32;",
            )
            .map_err(at("set synchronous and checkpoint"))?;
        let version = |c: &Connection| -> rusqlite::Result<u32> {
            c.query_row("PRAGMA user_version", [], |row| row.get(0))
        };
        let found = version(&connection).map_err(at("read the file format"))?;
        if found > FILE_FORMAT {
            return Err(fail(format!(
                "written by a newer macvlan-runc (file format {found}; this one knows up to {FILE_FORMAT}): upgrade macvlan-runc on this host"
            )));
        }
        if found < FILE_FORMAT {
            // Once per file, under the write lock: the first of several
            // hooks opening a new or old file upgrades it, the others wait
            // and find it done.
            let mut connection = connection;
            let upgrade = (|| -> rusqlite::Result<()> {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if version(&transaction)? < FILE_FORMAT {
                    transaction.execute_batch(
                        "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, lease INTEGER) WITHOUT ROWID;
                         CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY AUTOINCREMENT, ttl_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL);",
                    )?;
                    // Files written before leases existed have no lease column.
                    let has_lease_column = transaction.query_row(
                        "SELECT count(*) FROM pragma_table_info('kv') WHERE name = 'lease'",
                        [],
                        |row| row.get::<_, i64>(0),
                    )? > 0;
                    if !has_lease_column {
                        transaction.execute_batch("ALTER TABLE kv ADD COLUMN lease INTEGER")?;
                    }
                    transaction.execute_batch(&format!("PRAGMA user_version = {FILE_FORMAT}"))?;
                }
                transaction.commit()
            })();
            upgrade.map_err(|e| fail(format!("upgrade the file format: {}", explain(&e))))?;
            return Ok(SqliteStore {
                path: path.to_path_buf(),
                connection: Mutex::new(connection),
                files: file_identities(path),
            });
        }
        Ok(SqliteStore {
            path: path.to_path_buf(),
            connection: Mutex::new(connection),
            files: file_identities(path),
        })
    }

    fn error(&self, e: rusqlite::Error) -> StoreError {
        StoreError::Backend {
            location: format!("sqlite://{}", self.path.display()),
            message: explain(&e),
        }
    }
}

/// How long a connection waits for another's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Puts the file in WAL mode. That takes the file's exclusive lock, and
/// SQLite answers SQLITE_BUSY at once, without its busy handler, while
/// another connection holds a read lock: several first openers of a new
/// file (a daemon's threads, hooks starting together) met "database is
/// locked" here. So wait for it as the busy handler would.
fn set_wal_mode(connection: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match connection.query_row("PRAGMA journal_mode = WAL", [], |row| {
            row.get::<_, String>(0)
        }) {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(mode) if !mode.eq_ignore_ascii_case("wal") => {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("the file stays in journal mode {mode:?}, not WAL")),
                ))
            }
            other => return other.map(|_| ()),
        }
    }
}

/// Whether the database file's header says WAL mode: its read and write
/// format versions (bytes 18 and 19) are 2 (sqlite.org/fileformat.html).
/// Anything unreadable counts as no, and the pragma decides.
fn in_wal_mode(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok()
        && header.starts_with(b"SQLite format 3\0")
        && header[18] == 2
        && header[19] == 2
}

/// Milliseconds since the epoch: lease expiry must hold across processes
/// and reboots, so wall-clock time.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A key is visible while it has no lease or its lease has not expired.
const LIVE: &str = "(lease IS NULL OR lease IN (SELECT id FROM leases WHERE expires_ms > :now))";

/// The live value at `key`. Statements are prepared once per connection:
/// an attach makes about ten reads (docs/hook-timing.md).
fn get_live(connection: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    connection
        .prepare_cached(&format!("SELECT value FROM kv WHERE key = :key AND {LIVE}"))?
        .query_row(named_params! {":key": key, ":now": now_ms()}, |row| {
            row.get(0)
        })
        .optional()
}

/// Deletes expired leases and their keys.
fn purge_expired(connection: &Connection) -> rusqlite::Result<()> {
    let now = now_ms();
    connection.execute(
        "DELETE FROM kv WHERE lease IS NOT NULL AND lease NOT IN (SELECT id FROM leases WHERE expires_ms > ?1)",
        params![now],
    )?;
    connection.execute("DELETE FROM leases WHERE expires_ms <= ?1", params![now])?;
    Ok(())
}

/// The smallest string greater than every string starting with `prefix`
/// (for a range scan that uses the primary key's index).
fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.to_string();
    end.push(char::MAX);
    end
}

impl Store for SqliteStore {
    fn still_current(&self) -> bool {
        self.files.is_some() && file_identities(&self.path) == self.files
    }

    fn get(&self, key: &str) -> Result<Option<String>> {
        let connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        get_live(&connection, key).map_err(|e| self.error(e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        let mut statement = connection
            .prepare_cached(&format!(
                "SELECT key, value FROM kv WHERE key >= :start AND key < :end AND {LIVE} ORDER BY key"
            ))
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(
                named_params! {":start": prefix, ":end": prefix_end(prefix), ":now": now_ms()},
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(|e| self.error(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.error(e))
    }

    fn transaction(&self, compares: &[Compare], ops: &[Op]) -> Result<bool> {
        let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.error(e))?;
        for compare in compares {
            let (key, expected) = match compare {
                Compare::Absent(key) => (key, None),
                Compare::Equals(key, value) => (key, Some(value)),
            };
            let actual = get_live(&transaction, key).map_err(|e| self.error(e))?;
            if actual.as_ref() != expected {
                return Ok(false);
            }
        }
        for op in ops {
            match op {
                Op::Put(key, value) => transaction
                    .prepare_cached(
                        "INSERT INTO kv (key, value, lease) VALUES (?1, ?2, NULL)
                         ON CONFLICT(key) DO UPDATE SET value = excluded.value, lease = NULL",
                    )
                    .and_then(|mut put| put.execute(params![key, value])),
                Op::PutWithLease(key, value, lease) => {
                    let live: bool = transaction
                        .query_row(
                            "SELECT count(*) FROM leases WHERE id = ?1 AND expires_ms > ?2",
                            params![lease.0, now_ms()],
                            |row| row.get::<_, i64>(0),
                        )
                        .map_err(|e| self.error(e))?
                        > 0;
                    if !live {
                        return Err(StoreError::LeaseEnded(*lease));
                    }
                    transaction.execute(
                        "INSERT INTO kv (key, value, lease) VALUES (?1, ?2, ?3)
                         ON CONFLICT(key) DO UPDATE SET value = excluded.value, lease = excluded.lease",
                        params![key, value, lease.0],
                    )
                }
                Op::Delete(key) => transaction
                    .prepare_cached("DELETE FROM kv WHERE key = ?1")
                    .and_then(|mut delete| delete.execute(params![key])),
            }
            .map_err(|e| self.error(e))?;
        }
        transaction.commit().map_err(|e| self.error(e))?;
        Ok(true)
    }

    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        purge_expired(&connection).map_err(|e| self.error(e))?;
        connection
            .execute(
                "INSERT INTO leases (ttl_ms, expires_ms) VALUES (?1, ?2)",
                params![ttl.as_millis() as i64, now_ms() + ttl.as_millis() as i64],
            )
            .map_err(|e| self.error(e))?;
        Ok(LeaseId(connection.last_insert_rowid()))
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<bool> {
        let connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        purge_expired(&connection).map_err(|e| self.error(e))?;
        let updated = connection
            .execute(
                "UPDATE leases SET expires_ms = ?1 + ttl_ms WHERE id = ?2",
                params![now_ms(), lease.0],
            )
            .map_err(|e| self.error(e))?;
        Ok(updated == 1)
    }

    fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.error(e))?;
        transaction
            .execute("DELETE FROM kv WHERE lease = ?1", params![lease.0])
            .map_err(|e| self.error(e))?;
        transaction
            .execute("DELETE FROM leases WHERE id = ?1", params![lease.0])
            .map_err(|e| self.error(e))?;
        transaction.commit().map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_knows_when_its_files_were_replaced_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path).unwrap();
        assert!(store.still_current());
        std::fs::remove_file(dir.path().join("state.db-shm")).unwrap();
        assert!(!store.still_current());
        // SQLite shares one shared-memory mapping per file in a process:
        // a new handle makes a new -shm once the old handle is gone.
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert!(store.still_current());
        std::fs::copy(&path, dir.path().join("copy.db")).unwrap();
        std::fs::rename(dir.path().join("copy.db"), &path).unwrap();
        assert!(!store.still_current());
    }

    #[test]
    fn compare_and_apply() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let key = "/macvlan/ipam/p/192.0.2.10".to_string();
        assert!(store
            .transaction(
                &[Compare::Absent(key.clone())],
                &[Op::Put(key.clone(), "a".into())]
            )
            .unwrap());
        assert!(!store
            .transaction(
                &[Compare::Absent(key.clone())],
                &[Op::Put(key.clone(), "b".into())]
            )
            .unwrap());
        assert_eq!(store.get(&key).unwrap().as_deref(), Some("a"));
        assert!(store
            .transaction(
                &[Compare::Equals(key.clone(), "a".into())],
                &[Op::Delete(key.clone())]
            )
            .unwrap());
        assert_eq!(store.get(&key).unwrap(), None);
    }

    #[test]
    fn leased_keys_vanish_when_the_lease_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let ttl = Duration::from_millis(300);
        let lease = store.grant_lease(ttl).unwrap();
        let put = |key: &str, lease| {
            store
                .transaction(&[], &[Op::PutWithLease(key.into(), "v".into(), lease)])
                .unwrap()
        };
        put("/s/a", lease);
        store
            .transaction(&[], &[Op::Put("/plain".into(), "v".into())])
            .unwrap();
        assert_eq!(store.list("/s/").unwrap().len(), 1);
        std::thread::sleep(Duration::from_millis(200));
        assert!(store.keep_alive(lease).unwrap());
        std::thread::sleep(Duration::from_millis(200));
        // Kept alive: still there 400 ms after the grant.
        assert_eq!(store.get("/s/a").unwrap().as_deref(), Some("v"));
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(store.get("/s/a").unwrap(), None);
        assert!(store.list("/s/").unwrap().is_empty());
        // An ended lease is reported, and a key can no longer be put under it.
        assert!(!store.keep_alive(lease).unwrap());
        assert!(matches!(
            store.transaction(&[], &[Op::PutWithLease("/s/b".into(), "v".into(), lease)]),
            Err(StoreError::LeaseEnded(_))
        ));
        // An expired key counts as absent for a create-if-absent.
        assert!(store
            .transaction(
                &[Compare::Absent("/s/a".into())],
                &[Op::Put("/s/a".into(), "w".into())]
            )
            .unwrap());
        let second = store.grant_lease(Duration::from_secs(60)).unwrap();
        put("/s/c", second);
        store.revoke_lease(second).unwrap();
        assert_eq!(store.get("/s/c").unwrap(), None);
        assert_eq!(store.get("/plain").unwrap().as_deref(), Some("v"));
    }

    /// `work`'s results on `n` threads started together.
    fn at_once<T: Send>(n: usize, work: impl Fn() -> T + Sync) -> Vec<T> {
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..n).map(|_| scope.spawn(&work)).collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        })
    }

    #[test]
    fn many_first_openers_of_a_new_file_all_succeed() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("fresh.db");
            for result in at_once(16, || SqliteStore::open(&path).map(|_| ())) {
                assert!(result.is_ok(), "round {round}: {result:?}");
            }
        }
    }

    /// The case behind "set WAL mode: database is locked": two first
    /// openers put one file in WAL mode at the same instant; each holds a
    /// read lock and wants the exclusive one, and SQLite fails one at once.
    #[test]
    fn two_connections_put_one_file_in_wal_mode_together() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..200 {
            let path = dir.path().join(format!("{round}.db"));
            Connection::open(&path)
                .unwrap()
                .execute_batch("CREATE TABLE t (x)")
                .unwrap();
            let barrier = std::sync::Barrier::new(2);
            for result in at_once(2, || {
                let connection = Connection::open(&path).unwrap();
                connection.busy_timeout(BUSY_TIMEOUT).unwrap();
                barrier.wait();
                set_wal_mode(&connection)
            }) {
                assert!(result.is_ok(), "round {round}: {result:?}");
            }
        }
    }

    #[test]
    fn opens_a_file_written_before_leases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
             INSERT INTO kv VALUES ('/k', 'v');",
        )
        .unwrap();
        drop(old);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get("/k").unwrap().as_deref(), Some("v"));
    }

    #[test]
    fn a_file_is_put_in_wal_mode_once_and_found_in_it_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollback.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        assert!(!in_wal_mode(&path));
        drop(SqliteStore::open(&path).unwrap());
        assert!(in_wal_mode(&path));
        let store = SqliteStore::open(&path).unwrap();
        let mode: String = store
            .connection
            .lock()
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        // A new file too, and a file that is no database is no WAL file.
        let new = dir.path().join("new.db");
        drop(SqliteStore::open(&new).unwrap());
        assert!(in_wal_mode(&new));
        std::fs::write(dir.path().join("junk"), b"SQLite format 2").unwrap();
        assert!(!in_wal_mode(&dir.path().join("junk")));
    }

    #[test]
    fn list_is_a_prefix_scan() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        for key in ["/m/flat/a", "/m/flat/b", "/m/flatx", "/m/ipam/x"] {
            store
                .transaction(&[], &[Op::Put(key.into(), "1".into())])
                .unwrap();
        }
        let keys: Vec<String> = store
            .list("/m/flat/")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["/m/flat/a", "/m/flat/b"]);
    }

    #[test]
    fn concurrent_claims_never_hand_out_one_key_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        SqliteStore::open(&path).unwrap();
        let winners: Vec<bool> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let store = SqliteStore::open(&path).unwrap();
                    store
                        .transaction(
                            &[Compare::Absent("/k".into())],
                            &[Op::Put("/k".into(), i.to_string())],
                        )
                        .unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert_eq!(winners.iter().filter(|w| **w).count(), 1);
    }
}
