//! The embedded store: one SQLite file, one table of keys, transactions that
//! take the write lock up front so concurrent hooks serialise cleanly.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{Compare, Op, Result, Store, StoreError};

pub struct SqliteStore {
    path: PathBuf,
    connection: Mutex<Connection>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let fail = |message: String| StoreError::Backend {
            location: format!("sqlite://{}", path.display()),
            message,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        }
        let connection = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        // Many hooks start at once (32 containers in parallel is a test):
        // wait for the lock instead of failing with SQLITE_BUSY.
        connection
            .busy_timeout(Duration::from_secs(10))
            .map_err(|e| fail(e.to_string()))?;
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
            .map_err(|e| fail(e.to_string()))?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 PRAGMA wal_autocheckpoint = 32;
                 CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;",
            )
            .map_err(|e| fail(e.to_string()))?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            connection: Mutex::new(connection),
        })
    }

    fn error(&self, e: rusqlite::Error) -> StoreError {
        StoreError::Backend {
            location: format!("sqlite://{}", self.path.display()),
            message: e.to_string(),
        }
    }
}

/// The smallest string greater than every string starting with `prefix`
/// (for a range scan that uses the primary key's index).
fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.to_string();
    end.push(char::MAX);
    end
}

impl Store for SqliteStore {
    fn get(&self, key: &str) -> Result<Option<String>> {
        let connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        connection
            .query_row("SELECT value FROM kv WHERE key = ?1", params![key], |row| {
                row.get(0)
            })
            .optional()
            .map_err(|e| self.error(e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        let mut statement = connection
            .prepare_cached("SELECT key, value FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(params![prefix, prefix_end(prefix)], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
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
            let actual: Option<String> = transaction
                .query_row("SELECT value FROM kv WHERE key = ?1", params![key], |row| {
                    row.get(0)
                })
                .optional()
                .map_err(|e| self.error(e))?;
            if actual.as_ref() != expected {
                return Ok(false);
            }
        }
        for op in ops {
            match op {
                Op::Put(key, value) => transaction.execute(
                    "INSERT INTO kv (key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![key, value],
                ),
                Op::Delete(key) => {
                    transaction.execute("DELETE FROM kv WHERE key = ?1", params![key])
                }
            }
            .map_err(|e| self.error(e))?;
        }
        transaction.commit().map_err(|e| self.error(e))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
