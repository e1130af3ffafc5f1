//! The database: PostgreSQL in a cluster, SQLite in standalone mode, behind one `sqlx::AnyPool`
//! so that every query above this module is the same code for both. The SQL is written in
//! the dialect both understand (`$1` placeholders, `RETURNING`, `ON CONFLICT`, partial
//! indexes), integers and times as BIGINT, flags as BIGINT 0/1.
//!
//! Migrations are the numbered files in the top-level `migrations/` folder, embedded in the
//! binary and applied at start-up in order, each in its own transaction, recorded in
//! `schema_migrations`. A shipped migration is never edited.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

/// The migrations, in order, and the backend each is for (`None`: both; a file named
/// `….postgres.sql` is for PostgreSQL only, and is recorded as applied on SQLite without
/// running). Add new files at the end.
const MIGRATIONS: &[(i64, &str, Option<Backend>, &str)] = &[
    (1, "foundation", None, include_str!("../../migrations/0001_foundation.sql")),
    (2, "connectors", None, include_str!("../../migrations/0002_connectors.sql")),
    (3, "fleet", None, include_str!("../../migrations/0003_fleet.sql")),
    (4, "permissions", None, include_str!("../../migrations/0004_permissions.sql")),
    (5, "worker_pools", None, include_str!("../../migrations/0005_worker_pools.sql")),
    (6, "watch", None, include_str!("../../migrations/0006_watch.sql")),
    (7, "state_versions", None, include_str!("../../migrations/0007_state_versions.sql")),
    (
        8,
        "file_state_order",
        Some(Backend::Postgres),
        include_str!("../../migrations/0008_file_state_order.postgres.sql"),
    ),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    /// SQLite only: the one connection write transactions use, one at a time (see
    /// [`Db::begin`]); `pool` serves everything else.
    writer: Option<AnyPool>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("backend", &self.backend).finish()
    }
}

impl Db {
    /// Starts a transaction that will write. On SQLite it takes the write lock at its start
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads first and writes later cannot
    /// wait for the lock when another connection wrote meanwhile (SQLite answers
    /// `SQLITE_BUSY`/`SQLITE_BUSY_SNAPSHOT` at once, without its busy timeout), which failed
    /// uploads with 32 files in flight.
    ///
    /// On SQLite every write transaction also runs on the one connection kept for writes
    /// (`writer`), so this process's writers queue, first come first served, for that
    /// connection instead of for SQLite's lock; everything else uses the other connections.
    /// SQLite runs one writer at a time anyway. Left to SQLite alone, a writer that found
    /// the lock taken slept in its busy handler (1, 2, 5, 10 ms and longer as it kept
    /// failing) and woke long after the lock was free, and it first waited for a connection
    /// behind the readers. The writer connection also keeps every write statement prepared.
    /// Small-file onboarding of 5,000 files went from 10.1–11.1 to 7.4–8.1 s, old and new
    /// binaries alternating (docs/PERFORMANCE.md, seventh round). The busy timeout still
    /// covers writes outside a transaction.
    ///
    /// The `BEGIN` runs in a task of its own, so that a caller dropped while it waits (a gRPC
    /// call cancelled by its client, say, while `BEGIN IMMEDIATE` waits for the write lock)
    /// cannot leave a connection inside a transaction that no `Transaction` value owns: such
    /// a connection went back to the pool holding SQLite's write lock ("database is locked"
    /// for every other writer, "begin_with at non-zero transaction depth" for its next user).
    /// Here the task finishes the `BEGIN`, and a transaction nobody awaits any more is dropped
    /// as a whole, which rolls it back.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        let (pool, writer) = (self.pool.clone(), self.writer.clone());
        tokio::spawn(async move {
            match writer {
                Some(w) => w.begin_with("BEGIN IMMEDIATE").await,
                None => pool.begin().await,
            }
        })
        .await
        .unwrap_or_else(|e| Err(sqlx::Error::Io(std::io::Error::other(e))))
    }

    /// Connects (creating the SQLite file if needed) and applies pending migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            anyhow::bail!("unsupported database URL scheme (use postgres:// or sqlite://)");
        };
        let (pool, writer) = match backend {
            Backend::Sqlite => {
                // Create the file up front: AnyPool cannot pass `create_if_missing`.
                let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                    .context("parsing the SQLite URL")?
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
                use sqlx::ConnectOptions;
                let conn = opts.connect().await.context("creating the SQLite database")?;
                drop(conn);
                (sqlite_pool(url, 8).await?, Some(sqlite_pool(url, 1).await?))
            }
            Backend::Postgres => AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // Plan every statement for the tables as they are now. sqlx prepares
                        // statements per connection, and after five runs PostgreSQL may keep
                        // one generic plan: made while a share's `nodes` were few (the start
                        // of an initial sync), the ancestor walk kept a sequential scan of the
                        // whole table for every file, which made onboarding quadratic
                        // (docs/PERFORMANCE.md, distributed mode).
                        conn.execute("SET plan_cache_mode = force_custom_plan").await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await
                .context("connecting to PostgreSQL")
                .map(|p| (p, None))?,
        };
        let db = Db { pool, backend, writer };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        self.pool
            .execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
            )
            .await
            .context("creating schema_migrations")?;
        for (version, name, only, sql) in MIGRATIONS {
            let mut tx = self.begin().await?;
            if self.backend == Backend::Postgres {
                // Several replicas may start at once: one applies, the others wait here.
                tx.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE").await?;
            }
            let done: Option<(i64,)> = sqlx::query_as("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(*version)
                .fetch_optional(&mut *tx)
                .await?;
            if done.is_some() {
                tx.rollback().await?;
                continue;
            }
            tracing::info!(migration.version = version, migration.name = name, "applying migration");
            let sql = if only.is_some_and(|b| b != self.backend) { "" } else { sql };
            for stmt in split_statements(sql) {
                tx.execute(stmt.as_str())
                    .await
                    .with_context(|| format!("migration {version} ({name}) failed at: {stmt}"))?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                .bind(*version)
                .bind(*name)
                .bind(crate::time::now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// A pool of at most `n` connections to an existing SQLite database, set up as this module
/// expects (busy timeout, foreign keys, `synchronous = NORMAL`; the file is in WAL mode).
async fn sqlite_pool(url: &str, n: u32) -> anyhow::Result<AnyPool> {
    AnyPoolOptions::new()
        .max_connections(n)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA busy_timeout = 30000").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                Ok(())
            })
        })
        .connect(url)
        .await
        .context("opening the SQLite database")
}

/// Splits a migration file into statements at `;` line ends, dropping `--` comments.
/// (Our migrations contain no semicolons inside literals or bodies.)
fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        let line = match line.find("--") {
            Some(i) => &line[..i],
            None => line,
        };
        cur.push_str(line);
        cur.push('\n');
        if line.trim_end().ends_with(';') {
            let stmt = cur.trim().trim_end_matches(';').trim().to_string();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            cur.clear();
        }
    }
    let rest = cur.trim();
    if !rest.is_empty() {
        out.push(rest.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn migration_files_split_into_statements() {
        let stmts = super::split_statements("-- c\nCREATE TABLE a (x BIGINT); -- t\nCREATE INDEX i ON a (x);\n");
        assert_eq!(stmts, vec!["CREATE TABLE a (x BIGINT)", "CREATE INDEX i ON a (x)"]);
    }
}
