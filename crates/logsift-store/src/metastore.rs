//! Where each index's catalog (its hash chain of segment additions and deletions) is kept:
//! `catalog.json` in the index's directory, or a PostgreSQL table (issue #18), so that the
//! list of segments outlives any one machine and several processes can share it.
//!
//! PostgreSQL: one row per catalog entry, `(index_name, seq)` its key and the entry as JSON.
//! A save appends, in one transaction, the entries the table does not have yet; an index's
//! saves are serialized by a transaction-scoped advisory lock on its name, and a catalog
//! whose chain the table has already moved past (another writer) is refused, not merged. A
//! catalog the table does not know yet but `catalog.json` holds (a data directory from before
//! the metastore) is imported on first load, in one transaction.
//!
//! While PostgreSQL is unreachable, saves fail: a seal keeps its records in memory and in the
//! WAL and is retried, as with any failed catalog save. The connection is made again on the
//! next call after it broke.

use parking_lot::Mutex;
use std::path::Path;
use std::sync::Arc;

use crate::catalog::{Catalog, CatalogEntry, CatalogError};
use crate::runtime::IoRuntime;

/// Where catalogs are kept.
#[derive(Clone, Default)]
pub enum Metastore {
    /// `catalog.json` in each index's directory.
    #[default]
    Files,
    Postgres(Arc<PgMetastore>),
}

impl std::fmt::Debug for Metastore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Metastore::Files => write!(f, "Files"),
            Metastore::Postgres(p) => write!(f, "Postgres({})", p.shown),
        }
    }
}

impl Metastore {
    /// The catalog of index `name`, whose directory is `dir`.
    pub fn load(&self, dir: &Path, name: &str) -> Result<Catalog, CatalogError> {
        match self {
            Metastore::Files => Catalog::load(dir),
            Metastore::Postgres(pg) => pg.load(dir, name),
        }
    }

    /// The indexes the metastore holds catalogs of that may have no directory here (a new
    /// machine); none for catalog files, which live in those directories.
    pub fn indexes(&self) -> Result<Vec<String>, CatalogError> {
        match self {
            Metastore::Files => Ok(Vec::new()),
            Metastore::Postgres(pg) => pg.indexes(),
        }
    }

    /// Each index's catalog and, where the metastore can tell it cheaply, the hash of its last
    /// entry: what a searcher compares with the chain it holds before loading a catalog
    /// again. Catalog files are listed from `dir` (the store's `indexes/`), without heads.
    pub fn heads(&self, dir: &Path) -> Result<Vec<(String, Option<String>)>, CatalogError> {
        match self {
            Metastore::Files => {
                let io = |source| CatalogError::Io {
                    path: dir.to_path_buf(),
                    source,
                };
                let mut names = Vec::new();
                for entry in std::fs::read_dir(dir).map_err(io)? {
                    let entry = entry.map_err(io)?;
                    if entry.file_type().map_err(io)?.is_dir() {
                        if let Some(name) = entry.file_name().to_str() {
                            names.push((name.to_string(), None));
                        }
                    }
                }
                names.sort();
                Ok(names)
            }
            Metastore::Postgres(pg) => Ok(pg
                .heads()?
                .into_iter()
                .map(|(name, head)| (name, Some(head)))
                .collect()),
        }
    }

    /// Saves `catalog` of index `name` durably: after `Ok`, a restart loads it.
    pub fn save(&self, dir: &Path, name: &str, catalog: &Catalog) -> Result<(), CatalogError> {
        match self {
            Metastore::Files => catalog.save(dir),
            Metastore::Postgres(pg) => pg.append(name, &catalog.entries),
        }
    }
}

/// Catalogs in a PostgreSQL database.
pub struct PgMetastore {
    url: String,
    /// The URL without its password, for messages.
    shown: String,
    runtime: IoRuntime,
    /// Whether this process writes catalogs: it then holds the writer lease (below).
    writer: bool,
    /// The indexer number whose lease a writer holds.
    indexer: u16,
    client: Mutex<Option<Arc<tokio_postgres::Client>>>,
    /// Held for a whole load or save: statements of two callers on one connection would
    /// interleave, and a save is a transaction.
    busy: Mutex<()>,
}

/// The writer lease: a session-level advisory lock that each process writing catalogs holds
/// on its connection, one per indexer number (`[node] indexer`). Record ids are positions in
/// that indexer's WAL within its own range (see [`crate::catalog::LSN_BITS`]), and the
/// catalog's highest id in the range tells its replay what is sealed, so two processes with
/// one number would take each other's records for sealed ones: the second is refused at
/// start. The lock goes with the connection, so a stopped or killed writer frees it. Number 0
/// (a lone writer, the default) keeps the lease name it always had.
fn writer_lease(indexer: u16) -> String {
    match indexer {
        0 => "SELECT pg_try_advisory_lock(hashtext('logsift_catalog_writer'))".into(),
        n => format!("SELECT pg_try_advisory_lock(hashtext('logsift_catalog_writer:{n}'))"),
    }
}

/// The version of the catalog's layout in PostgreSQL (the tables and the entry objects), kept
/// in `logsift_meta`: a database written by a later layout is refused, as a `catalog.json`
/// with an unknown `format_version` is. Tables made before the version existed get it.
const CATALOG_FORMAT_VERSION: &str = "1";

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS logsift_catalog (
    index_name text NOT NULL,
    seq bigint NOT NULL,
    entry jsonb NOT NULL,
    PRIMARY KEY (index_name, seq)
);
CREATE TABLE IF NOT EXISTS logsift_audit_outbox (
    id bigserial PRIMARY KEY,
    received_at_ns bigint NOT NULL,
    record text NOT NULL
);
CREATE TABLE IF NOT EXISTS logsift_holds (
    id text PRIMARY KEY,
    hold jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS logsift_tokens (
    id int PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL,
    file text NOT NULL
);
CREATE TABLE IF NOT EXISTS logsift_meta (
    key text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO logsift_meta (key, value) VALUES ('catalog_format_version', '1')
    ON CONFLICT (key) DO NOTHING";

fn pg_err(shown: &str, e: impl std::fmt::Display) -> CatalogError {
    CatalogError::Metastore(format!("{shown}: {e}"))
}

impl PgMetastore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and creates the
    /// table if needed. A `writer` takes the writer lease. Fails if the database cannot be
    /// reached now, or another writer holds the lease.
    pub fn connect(url: &str, writer: bool) -> Result<Self, String> {
        Self::connect_as(url, writer.then_some(0))
    }

    /// [`Self::connect`] for indexer number `writer` (`None`: a reader, which takes no lease).
    pub fn connect_as(url: &str, writer: Option<u16>) -> Result<Self, String> {
        let shown = match url.split_once('@') {
            Some((creds, rest)) => match creds.split_once("//") {
                Some((scheme, user)) => {
                    let user = user.split(':').next().unwrap_or_default();
                    format!("{scheme}//{user}@{rest}")
                }
                None => rest.to_string(),
            },
            None => url.to_string(),
        };
        let runtime =
            IoRuntime::new("logsift-metastore").map_err(|e| format!("metastore runtime: {e}"))?;
        let store = PgMetastore {
            url: url.to_string(),
            shown,
            runtime,
            writer: writer.is_some(),
            indexer: writer.unwrap_or(0),
            client: Mutex::new(None),
            busy: Mutex::new(()),
        };
        store.client().map_err(|e| e.to_string())?;
        Ok(store)
    }

    /// The open connection, or a new one (with the table made) if it broke.
    fn client(&self) -> Result<Arc<tokio_postgres::Client>, CatalogError> {
        let mut slot = self.client.lock();
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let (url, writer, lease) = (self.url.clone(), self.writer, writer_lease(self.indexer));
        let connected = self.runtime.run(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "metastore connection closed");
                }
            });
            client.batch_execute(SCHEMA).await?;
            let version: String = client
                .query_one(
                    "SELECT value FROM logsift_meta WHERE key = 'catalog_format_version'",
                    &[],
                )
                .await?
                .get(0);
            let leased = !writer
                || client
                    .query_one(lease.as_str(), &[])
                    .await?
                    .get::<_, bool>(0);
            Ok::<_, tokio_postgres::Error>((client, leased, version))
        });
        let client = match connected {
            Some(Ok((_, _, version))) if version != CATALOG_FORMAT_VERSION => {
                return Err(pg_err(
                    &self.shown,
                    format!("catalog format version {version}, this build reads {CATALOG_FORMAT_VERSION} (logsift_meta.catalog_format_version)"),
                ))
            }
            Some(Ok((c, true, _))) => Arc::new(c),
            Some(Ok((_, false, _))) => {
                return Err(pg_err(
                    &self.shown,
                    format!("another logsift process writes catalogs to this metastore as indexer {} (it holds that writer lease); give each indexer its own [node] indexer number", self.indexer),
                ))
            }
            Some(Err(e)) => return Err(pg_err(&self.shown, e)),
            None => return Err(pg_err(&self.shown, "shut down")),
        };
        *slot = Some(client.clone());
        Ok(client)
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    ) -> Result<T, CatalogError> {
        match self.runtime.run(f) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(pg_err(&self.shown, e)),
            None => Err(pg_err(&self.shown, "shut down")),
        }
    }

    fn indexes(&self) -> Result<Vec<String>, CatalogError> {
        let _busy = self.busy.lock();
        let client = self.client()?;
        let rows = self.run(async move {
            client
                .query(
                    "SELECT DISTINCT index_name FROM logsift_catalog ORDER BY 1",
                    &[],
                )
                .await
        })?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    fn load(&self, dir: &Path, name: &str) -> Result<Catalog, CatalogError> {
        let busy = self.busy.lock();
        let client = self.client()?;
        let index = name.to_string();
        let rows = self.run(async move {
            client
                .query(
                    "SELECT entry::text FROM logsift_catalog WHERE index_name = $1 ORDER BY seq",
                    &[&index],
                )
                .await
        })?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let text: String = row.get(0);
            let entry: CatalogEntry = serde_json::from_str(&text)
                .map_err(|e| pg_err(&self.shown, format!("index {name}: an entry: {e}")))?;
            entries.push(entry);
        }
        drop(busy);
        let mut catalog = Catalog::new();
        // Only the writer imports: a searcher's directories hold no catalog of their own.
        if entries.is_empty() && self.writer {
            // A data directory from before the metastore: its catalog moves to the table.
            let local = Catalog::load(dir)?;
            if !local.entries.is_empty() {
                self.append(name, &local.entries)?;
                tracing::info!(index = name, entries = local.entries.len(), metastore = %self.shown, "imported catalog.json into the metastore");
                return Ok(local);
            }
        }
        catalog.entries = entries;
        Ok(catalog)
    }

    fn heads(&self) -> Result<Vec<(String, String)>, CatalogError> {
        let _busy = self.busy.lock();
        let client = self.client()?;
        let rows = self.run(async move {
            client
                .query(
                    "SELECT DISTINCT ON (index_name) index_name, entry->>'hash' FROM logsift_catalog ORDER BY index_name, seq DESC",
                    &[],
                )
                .await
        })?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect())
    }

    /// The legal holds placed through the API, as JSON objects: shared by every process, so
    /// that whichever indexer runs retention keeps what any of them was told to hold.
    pub fn holds(&self) -> Result<Vec<String>, CatalogError> {
        let _busy = self.busy.lock();
        let client = self.client()?;
        let rows = self.run(async move {
            client
                .query("SELECT hold::text FROM logsift_holds ORDER BY id", &[])
                .await
        })?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// Places hold `id` (a JSON object); one already there is refused.
    pub fn put_hold(&self, id: &str, hold: &str) -> Result<(), CatalogError> {
        let _busy = self.busy.lock();
        let client = self.client()?;
        let (id, hold) = (id.to_string(), hold.to_string());
        self.run(async move {
            client
                .execute(
                    "INSERT INTO logsift_holds (id, hold) VALUES ($1, $2::text::jsonb)",
                    &[&id, &hold],
                )
                .await
        })?;
        Ok(())
    }

    /// Releases hold `id`: the hold it was, or `None` if there was none.
    pub fn drop_hold(&self, id: &str) -> Result<Option<String>, CatalogError> {
        let _busy = self.busy.lock();
        let client = self.client()?;
        let id = id.to_string();
        let row = self.run(async move {
            client
                .query_opt(
                    "DELETE FROM logsift_holds WHERE id = $1 RETURNING hold::text",
                    &[&id],
                )
                .await
        })?;
        Ok(row.map(|r| r.get::<_, String>(0)))
    }

    /// The API tokens file as the metastore keeps it for every process (its version, its
    /// contents), or `None` before the first is stored.
    pub fn tokens_file(&self) -> Result<Option<(i64, String)>, CatalogError> {
        let _busy = self.busy.lock();
        let client = self.client()?;
        let row = self.run(async move {
            client
                .query_opt("SELECT version, file FROM logsift_tokens WHERE id = 1", &[])
                .await
        })?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Stores `file` as the tokens file if the stored one is still version `seen` (`None`:
    /// none stored yet). `false` when another writer got there first: read and apply again.
    pub fn replace_tokens_file(&self, seen: Option<i64>, file: &str) -> Result<bool, CatalogError> {
        let _busy = self.busy.lock();
        let client = self.client()?;
        let file = file.to_string();
        let changed = self.run(async move {
            match seen {
                None => {
                    client
                        .execute(
                            "INSERT INTO logsift_tokens (id, version, file) VALUES (1, 1, $1) ON CONFLICT (id) DO NOTHING",
                            &[&file],
                        )
                        .await
                }
                Some(v) => {
                    client
                        .execute(
                            "UPDATE logsift_tokens SET version = version + 1, file = $1 WHERE id = 1 AND version = $2",
                            &[&file, &v],
                        )
                        .await
                }
            }
        })?;
        Ok(changed == 1)
    }

    /// Keeps audit records of a process that has no WAL (a searcher) until an indexer takes
    /// them into its `_audit` index: `(received_at_ns, JSON record)` each, in one statement.
    pub fn push_audit(&self, records: &[(i64, String)]) -> Result<(), CatalogError> {
        if records.is_empty() {
            return Ok(());
        }
        let _busy = self.busy.lock();
        let client = self.client()?;
        let (times, texts): (Vec<i64>, Vec<String>) = records.iter().cloned().unzip();
        self.run(async move {
            client
                .execute(
                    "INSERT INTO logsift_audit_outbox (received_at_ns, record) SELECT * FROM unnest($1::bigint[], $2::text[])",
                    &[&times, &texts],
                )
                .await
        })?;
        Ok(())
    }

    /// The oldest `limit` audit records waiting in the outbox: `(id, received_at_ns, record)`.
    pub fn pending_audit(&self, limit: i64) -> Result<Vec<(i64, i64, String)>, CatalogError> {
        let _busy = self.busy.lock();
        let client = self.client()?;
        let rows = self.run(async move {
            client
                .query(
                    "SELECT id, received_at_ns, record FROM logsift_audit_outbox ORDER BY id LIMIT $1",
                    &[&limit],
                )
                .await
        })?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Removes audit records an indexer has made durable in its WAL.
    pub fn remove_audit(&self, ids: &[i64]) -> Result<(), CatalogError> {
        let _busy = self.busy.lock();
        let client = self.client()?;
        let ids = ids.to_vec();
        self.run(async move {
            client
                .execute(
                    "DELETE FROM logsift_audit_outbox WHERE id = ANY($1)",
                    &[&ids],
                )
                .await
        })?;
        Ok(())
    }

    /// Appends the entries of `entries` past the table's last one, in one transaction. The
    /// table's last entry must be one of `entries` (same sequence number and hash): otherwise
    /// another process, or a save this one could not confirm, moved the chain elsewhere, and
    /// the save is refused rather than forking the chain.
    fn append(&self, name: &str, entries: &[CatalogEntry]) -> Result<(), CatalogError> {
        crate::fault("store::catalog-write").map_err(|e| pg_err(&self.shown, e))?;
        let _busy = self.busy.lock();
        let client = self.client()?;
        let index = name.to_string();
        let rows: Vec<(i64, String, String)> = entries
            .iter()
            .map(|e| Ok((e.seq as i64, e.hash.clone(), serde_json::to_string(e)?)))
            .collect::<Result<_, serde_json::Error>>()
            .map_err(|e| pg_err(&self.shown, e))?;
        let outcome = self.run(async move {
            // `transaction` needs a mutable client; statements do the same on this one, which
            // `busy` keeps to this caller.
            client.batch_execute("BEGIN").await?;
            let result = async {
                client
                    .execute(
                        "SELECT pg_advisory_xact_lock(hashtext('logsift_catalog:' || $1))",
                        &[&index],
                    )
                    .await?;
                let last = client
                    .query_opt(
                        "SELECT seq, entry->>'hash' FROM logsift_catalog WHERE index_name = $1 ORDER BY seq DESC LIMIT 1",
                        &[&index],
                    )
                    .await?
                    .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)));
                let have = last.as_ref().map_or(0, |l| l.0);
                if let Some((seq, hash)) = &last {
                    if !rows.iter().any(|(s, h, _)| s == seq && h == hash) {
                        return Ok(Some(*seq));
                    }
                }
                for (seq, _, entry) in rows.iter().filter(|(seq, _, _)| *seq > have) {
                    client
                        .execute(
                            "INSERT INTO logsift_catalog (index_name, seq, entry) VALUES ($1, $2, $3::text::jsonb)",
                            &[&index, seq, entry],
                        )
                        .await?;
                }
                Ok::<_, tokio_postgres::Error>(None)
            }
            .await;
            match &result {
                Ok(None) => client.batch_execute("COMMIT").await?,
                _ => {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
            }
            result
        });
        match outcome {
            Ok(None) => Ok(()),
            Ok(Some(seq)) => Err(CatalogError::Moved(format!(
                "{}: index {name}: the metastore's chain ends at entry {seq}, which this process does not hold: another indexer appended to it",
                self.shown
            ))),
            Err(e) => {
                // The connection may have failed after the commit reached the server: look.
                let last = entries.last().map(|e| (e.seq as i64, e.hash.clone()));
                match (last, self.landed(name, entries)) {
                    (None, _) | (_, Ok(false)) => Err(e),
                    (_, Ok(true)) => Ok(()),
                    (_, Err(_)) => Err(CatalogError::Unconfirmed(e.to_string())),
                }
            }
        }
    }

    /// Whether the last of `entries` is in the table, on a fresh connection.
    fn landed(&self, name: &str, entries: &[CatalogEntry]) -> Result<bool, CatalogError> {
        let Some(last) = entries.last() else {
            return Ok(true);
        };
        *self.client.lock() = None;
        let client = self.client()?;
        let (index, seq, hash) = (name.to_string(), last.seq as i64, last.hash.clone());
        let found = self.run(async move {
            client
                .query_opt(
                    "SELECT 1 FROM logsift_catalog WHERE index_name = $1 AND seq = $2 AND entry->>'hash' = $3",
                    &[&index, &seq, &hash],
                )
                .await
        })?;
        Ok(found.is_some())
    }
}
