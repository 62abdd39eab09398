//! The embedded SQLite backend (WAL mode, one writer thread, a small pool of
//! readers). It owns its data directory exclusively: a second process on the
//! same directory is refused, which is what lets a restarted node reclaim all
//! in-flight work at once instead of waiting for leases to run out.

mod checkpoint;
mod consent;
mod console;
pub mod counts;
pub mod db;
mod events;
mod group_commit;
mod inbound;
mod messages;
mod pg_schema;
mod providers;
mod read_pool;
mod receipts;
mod rows;
mod schema;
pub mod scratch;
mod signals;
mod templates;
mod tenants;
mod webhooks;
mod written_behind;

pub use signals::WorkSignals;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use db::{Conn, PgConn};
use rusqlite::{Connection, OpenFlags};
use switchboard_core::{Channel, MessageId, Timestamp, WorkspaceId};

pub use group_commit::{Chore, GroupCommit};
use read_pool::ReadPool;

use crate::Store;
use crate::error::StoreError;
use crate::model::*;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "switchboard.db";
const LOCK_FILE: &str = "switchboard.lock";

/// The SQL store: SQLite (embedded, one node) or PostgreSQL (any number
/// of nodes), with the same SQL, the same group-commit writer and a pool of
/// readers.
#[derive(Debug)]
pub struct SqlStore {
    writer: GroupCommit,
    readers: ReadPool,
    engine: Engine,
    counts: counts::Counts,
}

#[derive(Debug)]
enum Engine {
    Sqlite {
        path: PathBuf,
        // Held for the life of the store: the exclusive lock on the data dir.
        _lock: File,
        // Runs for the life of the store.
        _checkpointer: checkpoint::Checkpointer,
    },
    Postgres,
}

/// The SQLite store (the embedded default).
pub type SqliteStore = SqlStore;

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk before the writer answers, so a 202 survives
    // a power cut, not only a process crash. Group commit pays for the fsync.
    // (The writer's connection then commits with NORMAL and syncs the WAL on
    // a thread of its own before answering: `GroupCommit::start_pipelined`.)
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    keep_statements(conn)?;
    Ok(())
}

/// Keeps prepared statements prepared, on every SQLite connection.
///
/// rusqlite keeps 16 prepared statements by default; the writer uses
/// several dozen, and an evicted one is parsed again on its next use.
///
/// And SQLite plans a statement again whenever a bound value its plan
/// looked at changes: since 3.47 that includes `LIMIT ?`, so the claims
/// (`LIMIT ?2`, whose value is the room left) were parsed and planned on
/// nearly every call, 4% of the writer's time end to end. The query
/// planner stability guarantee keeps the first plan: no plan here depends
/// on a bound value (the partial indexes are matched by literals).
fn keep_statements(conn: &Connection) -> Result<(), StoreError> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// Prepared statements kept per SQLite connection.
const STATEMENT_CACHE: usize = 256;

impl SqlStore {
    /// Writes `items` with `all` in one write job; if that fails (one item
    /// failing rolls the others back with it), writes each with `one` in a
    /// job of its own, so a failure is its item's alone. One result per
    /// item, in order.
    async fn together_or_each<T, R>(
        &self,
        items: Vec<T>,
        all: fn(&db::Db<'_>, &[T]) -> Result<Vec<R>, StoreError>,
        one: fn(&db::Db<'_>, &T) -> Result<R, StoreError>,
    ) -> Vec<Result<R, StoreError>>
    where
        T: Send + Sync + 'static,
        R: Send + 'static,
    {
        let items = std::sync::Arc::new(items);
        let shared = items.clone();
        match self.writer.run(move |c| all(c, &shared)).await {
            Ok(results) => results.into_iter().map(Ok).collect(),
            Err(_) => {
                let mut out = Vec::with_capacity(items.len());
                for i in 0..items.len() {
                    let items = items.clone();
                    out.push(self.writer.run(move |c| one(c, &items[i])).await);
                }
                out
            }
        }
    }

    /// Opens (creating if needed) the SQLite store in `data_dir`, applies
    /// migrations and starts the writer thread.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::DataDir(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let lock_path = data_dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                StoreError::DataDir(format!("cannot open {}: {e}", lock_path.display()))
            })?;
        lock.try_lock().map_err(|_| {
            StoreError::DataDir(format!(
                "{} is in use by another Switchboard process",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(DB_FILE);
        // The writer's connection writes each commit's WAL frames in one
        // system call, not two per frame (`switchboard_walvfs`); readers
        // and the checkpointer read the same files as SQLite's default VFS
        // does.
        let vfs = switchboard_walvfs::register()?;
        let mut conn = Connection::open_with_flags_and_vfs(&path, OpenFlags::default(), vfs)?;
        configure(&conn)?;
        schema::migrate(&mut conn)?;
        written_behind::prepare(&conn)?;
        // Checkpoints run on a thread of their own; the writer's automatic
        // one is the backstop (`checkpoint`).
        conn.pragma_update(None, "wal_autocheckpoint", checkpoint::BACKSTOP_PAGES)?;
        let checkpointer = checkpoint::Checkpointer::start(path.clone())?;
        // The writer commits without syncing and a thread of its own syncs
        // the WAL before anyone is answered (`group_commit`).
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let nudge = checkpointer.nudger();
        let (writer, _handle) = GroupCommit::start_pipelined(
            Conn::Lite(conn),
            wal.into(),
            Some(Box::new(move || nudge.nudge())),
            Some(group_commit::Chore {
                every: written_behind::EVERY,
                step: written_behind::sweep_step,
                start: written_behind::install,
                due: written_behind::due,
            }),
        );
        let read_path = path.clone();
        let readers = ReadPool::new(
            4,
            std::sync::Arc::new(move || {
                let c = Connection::open_with_flags(
                    &read_path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.pragma_update(None, "busy_timeout", 5000)?;
                keep_statements(&c)?;
                Ok(Conn::Lite(c))
            }),
        );
        Ok(SqlStore {
            writer,
            readers,
            counts: counts::Counts::default(),
            engine: Engine::Sqlite {
                path,
                _lock: lock,
                _checkpointer: checkpointer,
            },
        })
    }

    /// How the writer's PostgreSQL session is set (`connect_postgres`):
    /// - `enable_seqscan = off`: its statements find rows by key or
    ///   through a small set of keys; a sequential scan is never what they
    ///   want, but a plan made while a table was small may choose one and
    ///   keep it (a prepared statement's generic plan is not replanned
    ///   until the table's statistics change). Discouraged on its
    ///   connection only.
    /// - `plan_cache_mode = force_generic_plan`: each prepared statement is
    ///   planned once, not at every run. Left to choose (`auto`), the
    ///   server plans a statement afresh each time while a plan made for
    ///   its parameters is estimated cheaper than the generic one, which
    ///   is so for a batch of fewer rows than the generic plan assumes of
    ///   an array (ten): under a light load, where batches hold one to
    ///   nine accepts, the writer's backend spent about half its time in
    ///   the planner. Its statements' generic plans are the ones tested
    ///   (`plan_tests`).
    ///
    /// - `jit = off`: its statements are small, and compiling one takes
    ///   tens of milliseconds, which never pays for itself here; and a plan
    ///   left with a sequential scan that `enable_seqscan` prices at 10^10
    ///   would cross `jit_above_cost` whatever its size (the range read of
    ///   a redelivery did: 50–110 ms a call, before it read the ids' index).
    ///
    /// Its `synchronous_commit` is the server's: its transactions set it
    /// off (`group_commit::begin`), and a batch of accepts in flight, a
    /// statement in no transaction, commits with it.
    pub(crate) const WRITER_SESSION: &str =
        "SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan; SET jit = off";

    /// Connects to PostgreSQL at `url` (`postgres://user@host:port/db`),
    /// applies its migrations (one node at a time, under an advisory lock)
    /// and starts the writer. `readers` connections serve reads. Blocks:
    /// call it from a blocking context (or `connect_postgres_async`).
    pub fn connect_postgres(url: &str, readers: usize) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::DataDir(format!("invalid database URL: {e}")))?;
        // A server that does not answer must not hang a node's start or a
        // read; and operators see which connections are ours.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("switchboard");
        }
        let connect = move || -> Result<Conn, StoreError> {
            Ok(Conn::Pg(Box::new(PgConn::connect(&config)?)))
        };
        let writer_connect = {
            let connect = connect.clone();
            move || -> Result<Conn, StoreError> {
                let conn = connect()?;
                conn.db().execute_batch(Self::WRITER_SESSION)?;
                Ok(conn)
            }
        };
        let writer_conn = connect()?;
        pg_schema::migrate(&writer_conn.db())?;
        drop(writer_conn);
        let (writer, _handle) = GroupCommit::start_pipelined_pg(
            writer_connect()?,
            Box::new(writer_connect),
            Box::new(connect.clone()),
        )?;
        let readers = ReadPool::new(readers.max(1), std::sync::Arc::new(connect));
        Ok(SqlStore {
            writer,
            readers,
            counts: counts::Counts::default(),
            engine: Engine::Postgres,
        })
    }

    /// `connect_postgres` on a blocking thread.
    pub async fn connect_postgres_async(url: &str, readers: usize) -> Result<Self, StoreError> {
        let url = url.to_owned();
        tokio::task::spawn_blocking(move || Self::connect_postgres(&url, readers))
            .await
            .map_err(|e| StoreError::DataDir(format!("connecting failed: {e}")))?
    }

    /// The SQLite database file (`None` on PostgreSQL).
    pub fn path(&self) -> Option<&Path> {
        match &self.engine {
            Engine::Sqlite { path, .. } => Some(path),
            Engine::Postgres => None,
        }
    }

    /// Whether this store is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.engine, Engine::Postgres)
    }

    /// This store with `policy` for `status_counts`' count of every status
    /// (`counts::RecountPolicy::default()` otherwise).
    #[must_use]
    pub fn with_recount_policy(mut self, policy: counts::RecountPolicy) -> Self {
        self.counts = counts::Counts::new(policy);
        self
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn admin_token_hash(&self) -> Result<Option<String>, StoreError> {
        self.readers.run(tenants::admin_token_hash).await
    }

    async fn set_admin_token_hash(&self, hash: &str) -> Result<(), StoreError> {
        let hash = hash.to_owned();
        self.writer
            .run(move |c| tenants::set_admin_token_hash(c, &hash))
            .await
    }

    async fn create_workspace(&self, name: &str, now: Timestamp) -> Result<Workspace, StoreError> {
        let name = name.to_owned();
        self.writer
            .run(move |c| tenants::create_workspace(c, &name, now))
            .await
    }

    async fn get_workspace(&self, id: &WorkspaceId) -> Result<Option<Workspace>, StoreError> {
        let id = id.clone();
        self.readers
            .run(move |c| tenants::get_workspace(c, &id))
            .await
    }

    async fn list_workspaces(&self) -> Result<Vec<Workspace>, StoreError> {
        self.readers.run(tenants::list_workspaces).await
    }

    async fn put_integration(&self, integration: IntegrationRecord) -> Result<bool, StoreError> {
        self.writer
            .run(move |c| tenants::put_integration(c, &integration))
            .await
    }

    async fn find_integration(
        &self,
        kind: &str,
        token_hash: &str,
    ) -> Result<Option<IntegrationRecord>, StoreError> {
        let (kind, hash) = (kind.to_owned(), token_hash.to_owned());
        self.readers
            .run(move |c| tenants::find_integration(c, &kind, &hash))
            .await
    }

    async fn list_integrations(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Vec<IntegrationRecord>, StoreError> {
        let ws = workspace.clone();
        self.readers
            .run(move |c| tenants::list_integrations(c, &ws))
            .await
    }

    async fn delete_integration(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.writer
            .run(move |c| Ok(c.execute("DELETE FROM integrations WHERE id = ?1", db::p![id])? > 0))
            .await
    }

    async fn get_integration(&self, id: &str) -> Result<Option<IntegrationRecord>, StoreError> {
        let id = id.to_owned();
        self.readers
            .run(move |c| tenants::get_integration(c, &id))
            .await
    }

    async fn set_integration_config(
        &self,
        id: &str,
        config: serde_json::Value,
    ) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.writer
            .run(move |c| tenants::set_integration_config(c, &id, &config))
            .await
    }

    async fn first_delivery(
        &self,
        integration_id: &str,
        delivery_key: &str,
        now: Timestamp,
        forget_before: Timestamp,
    ) -> Result<bool, StoreError> {
        let (id, key) = (integration_id.to_owned(), delivery_key.to_owned());
        self.writer
            .run(move |c| tenants::first_delivery(c, &id, &key, now, forget_before))
            .await
    }

    async fn integration_headers(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        let kind = kind.to_owned();
        self.readers
            .run(move |c| tenants::integration_headers(c, &kind))
            .await
    }

    async fn set_location_id(
        &self,
        workspace: &WorkspaceId,
        location_id: &str,
    ) -> Result<bool, StoreError> {
        let (ws, loc) = (workspace.clone(), location_id.to_owned());
        self.writer
            .run(move |c| tenants::set_location_id(c, &ws, &loc))
            .await
    }

    async fn create_api_key(
        &self,
        workspace: &WorkspaceId,
        key_hash: &str,
        hint: &str,
        now: Timestamp,
    ) -> Result<ApiKey, StoreError> {
        let (ws, hash, hint) = (workspace.clone(), key_hash.to_owned(), hint.to_owned());
        self.writer
            .run(move |c| tenants::create_api_key(c, &ws, &hash, &hint, now))
            .await
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let hash = key_hash.to_owned();
        self.readers
            .run(move |c| tenants::find_api_key(c, &hash))
            .await
    }

    async fn list_api_keys(&self, workspace: &WorkspaceId) -> Result<Vec<ApiKey>, StoreError> {
        let ws = workspace.clone();
        self.readers
            .run(move |c| tenants::list_api_keys(c, &ws))
            .await
    }

    async fn revoke_api_key(
        &self,
        workspace: &WorkspaceId,
        key_id: &str,
        now: Timestamp,
    ) -> Result<Option<ApiKey>, StoreError> {
        let (ws, id) = (workspace.clone(), key_id.to_owned());
        self.writer
            .run(move |c| tenants::revoke_api_key(c, &ws, &id, now))
            .await
    }

    async fn sender_owners(
        &self,
        provider: &str,
        channel: Channel,
        address: &str,
    ) -> Result<Vec<WorkspaceId>, StoreError> {
        let (p, a) = (provider.to_owned(), address.to_owned());
        self.readers
            .run(move |c| tenants::sender_owners(c, &p, channel, &a))
            .await
    }

    async fn senders(
        &self,
        workspace: &WorkspaceId,
        channel: Channel,
    ) -> Result<Vec<Sender>, StoreError> {
        let ws = workspace.clone();
        self.readers
            .run(move |c| providers::senders(c, &ws, channel))
            .await
    }

    async fn all_senders(&self, workspace: &WorkspaceId) -> Result<Vec<Sender>, StoreError> {
        let ws = workspace.clone();
        self.readers
            .run(move |c| providers::all_senders(c, &ws))
            .await
    }

    async fn create_sender(
        &self,
        workspace: &WorkspaceId,
        sender: NewSender,
        now: Timestamp,
    ) -> Result<SenderCreation, StoreError> {
        let ws = workspace.clone();
        self.writer
            .run(move |c| providers::create_sender(c, &ws, &sender, now))
            .await
    }

    async fn delete_sender(
        &self,
        workspace: &WorkspaceId,
        id: &str,
    ) -> Result<Option<Sender>, StoreError> {
        let (ws, id) = (workspace.clone(), id.to_owned());
        self.writer
            .run(move |c| providers::delete_sender(c, &ws, &id))
            .await
    }

    async fn create_provider(&self, provider: ProviderRecord) -> Result<(), StoreError> {
        self.writer
            .run(move |c| providers::create_provider(c, &provider))
            .await
    }

    async fn update_provider(&self, provider: ProviderRecord) -> Result<bool, StoreError> {
        self.writer
            .run(move |c| providers::update_provider(c, &provider))
            .await
    }

    async fn list_providers(&self) -> Result<Vec<ProviderRecord>, StoreError> {
        self.readers.run(providers::list_providers).await
    }

    async fn get_provider(&self, id: &str) -> Result<Option<ProviderRecord>, StoreError> {
        let id = id.to_owned();
        self.readers
            .run(move |c| providers::get_provider(c, &id))
            .await
    }

    async fn delete_provider(&self, id: &str) -> Result<ProviderDeletion, StoreError> {
        let id = id.to_owned();
        self.writer
            .run(move |c| providers::delete_provider(c, &id))
            .await
    }

    async fn accept_message(&self, req: AcceptRequest) -> Result<AcceptOutcome, StoreError> {
        // Only PostgreSQL has other nodes, so only there is a copy kept for
        // the run again below. On SQLite this process holds the data
        // directory's lock and its writer looks the key up in the same
        // transaction as the insert, so no key can come between them; the
        // copy (a dozen strings) cost every accept.
        let again = self.is_postgres().then(|| req.clone());
        match (self.writer.accept(req).await, again) {
            // Another node stored the same idempotency key between this
            // job's check and its insert: run it again, and it finds that
            // message (a replay or a conflict).
            (Err(e), Some(again)) if e.is_unique_violation() => self.writer.accept(again).await,
            (other, _) => other,
        }
    }

    async fn get_message(
        &self,
        workspace: &WorkspaceId,
        id: &MessageId,
    ) -> Result<Option<MessageDetail>, StoreError> {
        let (ws, id) = (workspace.clone(), id.clone());
        self.readers.run(move |c| messages::get(c, &ws, &id)).await
    }

    async fn list_messages(
        &self,
        workspace: &WorkspaceId,
        filter: &MessageFilter,
    ) -> Result<MessagePage, StoreError> {
        let (ws, filter) = (workspace.clone(), filter.clone());
        self.readers
            .run(move |c| messages::list(c, &ws, &filter))
            .await
    }

    async fn cancel_message(
        &self,
        workspace: &WorkspaceId,
        id: &MessageId,
        now: Timestamp,
    ) -> Result<Option<TransitionOutcome>, StoreError> {
        let (ws, id) = (workspace.clone(), id.clone());
        self.writer
            .run(move |c| messages::cancel(c, &ws, &id, now))
            .await
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        self.writer
            .run(move |c| messages::claim_due(c, now, limit, lease))
            .await
    }

    async fn complete_attempt(
        &self,
        report: AttemptReport,
    ) -> Result<TransitionOutcome, StoreError> {
        self.writer
            .run(move |c| messages::complete_attempt(c, &report))
            .await
    }

    async fn complete_attempts(
        &self,
        reports: Vec<AttemptReport>,
    ) -> Vec<Result<TransitionOutcome, StoreError>> {
        self.together_or_each(
            reports,
            messages::complete_attempts,
            messages::complete_attempt,
        )
        .await
    }

    async fn apply_receipt(
        &self,
        provider_id: &str,
        provider_message_id: &str,
        kind: ReceiptKind,
        error_code: Option<&str>,
        detail: Option<&str>,
        now: Timestamp,
    ) -> Result<ReceiptOutcome, StoreError> {
        let (p, pm, e, d) = (
            provider_id.to_owned(),
            provider_message_id.to_owned(),
            error_code.map(str::to_owned),
            detail.map(str::to_owned),
        );
        self.writer
            .run(move |c| {
                messages::apply_receipt(c, &p, &pm, kind, e.as_deref(), d.as_deref(), now)
            })
            .await
    }

    async fn receive_receipt(
        &self,
        provider_id: &str,
        provider_message_id: &str,
        kind: ReceiptKind,
        error_code: Option<&str>,
        raw: Option<&str>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let one = IncomingReceipt {
            provider_message_id: provider_message_id.to_owned(),
            kind,
            error_code: error_code.map(str::to_owned),
            raw: raw.map(str::to_owned),
        };
        Ok(self
            .receive_receipts(provider_id, vec![one], now)
            .await?
            .pop()
            .unwrap_or(false))
    }

    async fn receive_receipts(
        &self,
        provider_id: &str,
        receipts: Vec<IncomingReceipt>,
        now: Timestamp,
    ) -> Result<Vec<bool>, StoreError> {
        let p = provider_id.to_owned();
        self.writer
            .run(move |c| receipts::receive_many(c, &p, &receipts, now))
            .await
    }

    async fn process_receipts(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<ReceiptPass, StoreError> {
        self.writer
            .run(move |c| receipts::process(c, now, limit))
            .await
    }

    async fn set_provider_rate(
        &self,
        provider_id: &str,
        rate: Option<(f64, f64)>,
    ) -> Result<(), StoreError> {
        let id = provider_id.to_owned();
        self.writer
            .run(move |c| messages::set_provider_rate(c, &id, rate))
            .await
    }

    async fn recover_in_flight(&self) -> Result<u64, StoreError> {
        if self.is_postgres() {
            // Other nodes may be sending right now: work left by a node that
            // died is taken over when its lease runs out, never sooner.
            return Ok(0);
        }
        self.writer
            .run(|c| {
                let messages = c.execute("UPDATE messages SET lease_until = 0 WHERE status = 'sending'", db::p![])?;
                let deliveries = c.execute(
                    "UPDATE webhook_deliveries SET lease_until = NULL WHERE status = 'pending' AND lease_until IS NOT NULL",
                    db::p![],
                )?;
                Ok((messages + deliveries) as u64)
            })
            .await
    }

    async fn next_due_at(&self) -> Result<Option<Timestamp>, StoreError> {
        self.readers.run(messages::next_due_at).await
    }

    async fn create_session(&self, session: ConsoleSession) -> Result<(), StoreError> {
        self.writer
            .run(move |c| console::create_session(c, &session))
            .await
    }

    async fn find_session(
        &self,
        id_hash: &str,
        now: Timestamp,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let id_hash = id_hash.to_owned();
        self.readers
            .run(move |c| console::find_session(c, &id_hash, now))
            .await
    }

    async fn touch_session(
        &self,
        id_hash: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let id_hash = id_hash.to_owned();
        self.writer
            .run(move |c| console::touch_session(c, &id_hash, now, expires_at))
            .await
    }

    async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        let id_hash = id_hash.to_owned();
        self.writer
            .run(move |c| console::delete_session(c, &id_hash))
            .await
    }

    async fn workspace_stats(
        &self,
        workspace: &WorkspaceId,
        since: Timestamp,
        until: Timestamp,
        buckets: u32,
    ) -> Result<WorkspaceStats, StoreError> {
        let ws = workspace.clone();
        self.readers
            .run(move |c| console::workspace_stats(c, &ws, since, until, buckets))
            .await
    }

    async fn conversations(
        &self,
        workspace: &WorkspaceId,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        let ws = workspace.clone();
        self.readers
            .run(move |c| console::conversations(c, &ws, since, limit))
            .await
    }

    async fn status_counts(&self) -> Result<StatusCounts, StoreError> {
        match self.counts.plan() {
            counts::Plan::Recount(recounting) => {
                let (by_status, at, took) = self
                    .readers
                    .run(|c| {
                        let at = std::time::Instant::now();
                        Ok((messages::status_counts(c)?, at, at.elapsed()))
                    })
                    .await?;
                recounting.keep(&by_status, at, took);
                Ok(StatusCounts {
                    by_status,
                    age: Duration::ZERO,
                })
            }
            counts::Plan::Reuse { by_status, age } => {
                let live = self.readers.run(messages::live_counts).await?;
                Ok(counts::merge(by_status, &live, age))
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.readers
            .run(|c| Ok(c.query_row("SELECT 1", db::p![], |_| Ok(()))?))
            .await
    }

    fn group_commit_stats(&self) -> GroupCommitStats {
        let mut stats = self.writer.stats();
        if matches!(self.engine, Engine::Sqlite { .. }) {
            stats.wal_writes = Some(switchboard_walvfs::stats());
        }
        stats
    }

    fn signals(&self) -> std::sync::Arc<WorkSignals> {
        self.writer.signals()
    }

    async fn create_endpoint(
        &self,
        workspace: &WorkspaceId,
        settings: &EndpointChanges,
        id: &str,
        secret: &str,
        now: Timestamp,
    ) -> Result<EndpointRecord, StoreError> {
        let (ws, s, id, secret) = (
            workspace.clone(),
            settings.clone(),
            id.to_owned(),
            secret.to_owned(),
        );
        self.writer
            .run(move |c| webhooks::create_endpoint(c, &ws, &s, &id, &secret, now))
            .await
    }

    async fn list_endpoints(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        let ws = workspace.clone();
        self.readers
            .run(move |c| webhooks::list_endpoints(c, &ws))
            .await
    }

    async fn get_endpoint(
        &self,
        workspace: &WorkspaceId,
        id: &str,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        let (ws, id) = (workspace.clone(), id.to_owned());
        self.readers
            .run(move |c| webhooks::get_endpoint(c, &ws, &id))
            .await
    }

    async fn update_endpoint(
        &self,
        workspace: &WorkspaceId,
        id: &str,
        changes: &EndpointChanges,
        now: Timestamp,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        let (ws, id, s) = (workspace.clone(), id.to_owned(), changes.clone());
        self.writer
            .run(move |c| webhooks::update_endpoint(c, &ws, &id, &s, now))
            .await
    }

    async fn delete_endpoint(
        &self,
        workspace: &WorkspaceId,
        id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let (ws, id) = (workspace.clone(), id.to_owned());
        self.writer
            .run(move |c| webhooks::delete_endpoint(c, &ws, &id, now))
            .await
    }

    async fn rotate_endpoint_secret(
        &self,
        workspace: &WorkspaceId,
        id: &str,
        new_secret: &str,
        grace_until: Timestamp,
        now: Timestamp,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        let (ws, id, secret) = (workspace.clone(), id.to_owned(), new_secret.to_owned());
        self.writer
            .run(move |c| webhooks::rotate_secret(c, &ws, &id, &secret, grace_until, now))
            .await
    }

    async fn claim_webhook_deliveries(
        &self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<WebhookJob>, StoreError> {
        self.writer
            .run(move |c| webhooks::claim(c, now, limit, lease))
            .await
    }

    async fn complete_webhook_attempt(
        &self,
        report: WebhookAttemptReport,
    ) -> Result<(), StoreError> {
        self.writer
            .run(move |c| webhooks::complete(c, &report))
            .await
    }

    async fn complete_webhook_attempts(
        &self,
        reports: Vec<WebhookAttemptReport>,
    ) -> Vec<Result<(), StoreError>> {
        self.together_or_each(reports, webhooks::complete_all, webhooks::complete)
            .await
    }

    async fn webhook_attempts(
        &self,
        workspace: &WorkspaceId,
        endpoint_id: &str,
        limit: usize,
    ) -> Result<Option<Vec<WebhookAttemptRecord>>, StoreError> {
        let (ws, id) = (workspace.clone(), endpoint_id.to_owned());
        self.readers
            .run(move |c| webhooks::attempts(c, &ws, &id, limit))
            .await
    }

    async fn redeliver(
        &self,
        workspace: &WorkspaceId,
        endpoint_id: &str,
        what: &Redelivery,
        now: Timestamp,
    ) -> Result<Option<usize>, StoreError> {
        let (ws, id, what) = (workspace.clone(), endpoint_id.to_owned(), what.clone());
        self.writer
            .run(move |c| webhooks::redeliver(c, &ws, &id, &what, now))
            .await
    }

    async fn webhook_test_job(
        &self,
        workspace: &WorkspaceId,
        endpoint_id: &str,
        now: Timestamp,
    ) -> Result<Option<WebhookJob>, StoreError> {
        let (ws, id) = (workspace.clone(), endpoint_id.to_owned());
        self.writer
            .run(move |c| webhooks::test_job(c, &ws, &id, now))
            .await
    }

    async fn next_webhook_due_at(&self, now: Timestamp) -> Result<Option<Timestamp>, StoreError> {
        self.readers
            .run(move |c| webhooks::next_due_at(c, now))
            .await
    }

    async fn create_template(
        &self,
        template: TemplateRecord,
    ) -> Result<Option<TemplateRecord>, StoreError> {
        self.writer
            .run(move |c| templates::create(c, &template))
            .await
    }

    async fn list_templates(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Vec<TemplateRecord>, StoreError> {
        let ws = workspace.clone();
        self.readers.run(move |c| templates::list(c, &ws)).await
    }

    async fn get_template(
        &self,
        workspace: &WorkspaceId,
        id_or_name: &str,
    ) -> Result<Option<TemplateRecord>, StoreError> {
        let (ws, id) = (workspace.clone(), id_or_name.to_owned());
        self.readers.run(move |c| templates::get(c, &ws, &id)).await
    }

    async fn update_template(
        &self,
        template: TemplateRecord,
    ) -> Result<Option<Result<TemplateRecord, ()>>, StoreError> {
        self.writer
            .run(move |c| templates::update(c, &template))
            .await
    }

    async fn record_inbound(&self, inbound: NewInbound) -> Result<InboundOutcome, StoreError> {
        let again = inbound.clone();
        match self.writer.run(move |c| inbound::record(c, &inbound)).await {
            // The same callback reached another node at the same moment.
            Err(e) if e.is_unique_violation() => {
                self.writer.run(move |c| inbound::record(c, &again)).await
            }
            other => other,
        }
    }

    async fn last_inbound_at(
        &self,
        workspace: &WorkspaceId,
        phone: &str,
        channel: Channel,
    ) -> Result<Option<Timestamp>, StoreError> {
        let (ws, phone) = (workspace.clone(), phone.to_owned());
        self.readers
            .run(move |c| inbound::last_at(c, &ws, &phone, channel))
            .await
    }

    async fn list_inbound(
        &self,
        workspace: &WorkspaceId,
        phone: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InboundRecord>, StoreError> {
        let (ws, phone, cursor) = (
            workspace.clone(),
            phone.map(str::to_owned),
            cursor.map(str::to_owned),
        );
        self.readers
            .run(move |c| inbound::list(c, &ws, phone.as_deref(), cursor.as_deref(), limit))
            .await
    }

    async fn workspace_settings(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let ws = workspace.clone();
        self.readers.run(move |c| inbound::settings(c, &ws)).await
    }

    async fn set_workspace_settings(
        &self,
        workspace: &WorkspaceId,
        settings: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let (ws, v) = (workspace.clone(), settings.clone());
        self.writer
            .run(move |c| inbound::set_settings(c, &ws, &v))
            .await
    }

    async fn change_consent(&self, change: ConsentChange) -> Result<bool, StoreError> {
        self.writer
            .run(move |c| consent::change(c, &change, true))
            .await
    }

    async fn import_consent(&self, changes: Vec<ConsentChange>) -> Result<(u64, u64), StoreError> {
        self.writer.run(move |c| consent::import(c, &changes)).await
    }

    async fn list_contacts(
        &self,
        workspace: &WorkspaceId,
        state: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, ConsentRecord)>, StoreError> {
        let (ws, state, cursor) = (
            workspace.clone(),
            state.map(str::to_owned),
            cursor.map(str::to_owned),
        );
        self.readers
            .run(move |c| consent::list(c, &ws, state.as_deref(), cursor.as_deref(), limit))
            .await
    }

    async fn contact_consent(
        &self,
        workspace: &WorkspaceId,
        phone: &str,
    ) -> Result<ContactConsent, StoreError> {
        let (ws, phone) = (workspace.clone(), phone.to_owned());
        self.readers
            .run(move |c| consent::get(c, &ws, &phone))
            .await
    }

    async fn delete_template(&self, workspace: &WorkspaceId, id: &str) -> Result<bool, StoreError> {
        let (ws, id) = (workspace.clone(), id.to_owned());
        self.writer
            .run(move |c| templates::delete(c, &ws, &id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, StatementStatus};

    /// How often a `LIMIT ?` statement is planned again when it runs with
    /// a new limit each time.
    fn replans(conn: &Connection) -> i32 {
        conn.execute_batch(
            "CREATE TABLE t (x INTEGER PRIMARY KEY, s TEXT);
             CREATE INDEX t_queued ON t (x) WHERE s = 'queued';
             INSERT INTO t VALUES (1, 'queued'), (2, 'queued'), (3, 'sent');",
        )
        .unwrap();
        let mut stmt = conn
            .prepare("SELECT x FROM t WHERE s = 'queued' AND x <= ?1 ORDER BY x LIMIT ?2")
            .unwrap();
        for limit in 1..=5 {
            let n = stmt
                .query_map([3, limit], |r| r.get::<_, i64>(0))
                .unwrap()
                .count();
            assert_eq!(n, usize::try_from(limit.min(2)).unwrap());
        }
        stmt.get_status(StatementStatus::RePrepare)
    }

    #[test]
    fn a_new_limit_does_not_plan_a_statement_again() {
        let bare = Connection::open_in_memory().unwrap();
        // The control: SQLite's own default plans again for new limits, so
        // the check below can fail.
        assert!(
            replans(&bare) > 0,
            "SQLite no longer plans again for LIMIT ?"
        );
        let kept = Connection::open_in_memory().unwrap();
        super::keep_statements(&kept).unwrap();
        assert_eq!(replans(&kept), 0);
    }
}
