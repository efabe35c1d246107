//! The persistence ports, written once for PostgreSQL and SQLite.
//!
//! One schema, one set of queries and one implementation of every port,
//! over diesel-async (SQLite through its `SyncConnectionWrapper`). The two
//! store adapters supply pools of their backend's connections and wire
//! [`SqlStore`]; what differs between the backends is the seam in
//! `dialect.rs`. Every multi-step change is one transaction; rows that
//! concurrent callers race for (a refresh token, a link token, due mail, the
//! superusers) are locked, so exactly one caller wins.

mod dialect;
mod ports;
mod queries;
mod rows;
mod schema;
mod sql_types;

use std::future::Future;

use gatehouse_domain::PortError;

use dialect::{AsDb, Db, StoreError, Work};

pub use dialect::{
    checkout, connections_in_doubt, count_statements, Pooled, SqliteConnection, SqliteThreads, WriterTurn,
};

/// Where a store gets its connections: an adapter's pools.
pub trait Connections: Clone + Send + Sync + 'static {
    fn connection(&self) -> impl Future<Output = Result<Pooled, PortError>> + Send;
}

/// Every persistence port, on the connections `C` lends.
#[derive(Debug, Clone)]
pub struct SqlStore<C> {
    connections: C,
}

impl<C: Connections> SqlStore<C> {
    pub fn new(connections: C) -> Self {
        Self { connections }
    }

    /// The adapter's pools, for their figures.
    pub fn connections(&self) -> &C {
        &self.connections
    }

    async fn conn(&self) -> Result<Pooled, PortError> {
        self.connections.connection().await
    }

    /// Runs `work` in one transaction on a pooled connection (see `Db::transaction`).
    async fn write<R, E, F>(&self, work: F) -> Result<R, E>
    where
        F: for<'t, 'c> Work<&'t mut Db<'c>, R> + Send,
        R: Send,
        E: From<StoreError>,
    {
        let mut conn = self.conn().await.map_err(StoreError::Port)?;
        Ok(conn.as_db().transaction(work).await?)
    }

    /// Runs `work` outside a transaction, each statement committing by
    /// itself, for writes atomic one statement at a time: no BEGIN and COMMIT
    /// round trips. On SQLite it still waits for the [`WriterTurn`], so that
    /// its statements queue fairly behind write transactions.
    async fn autocommit<R, F>(&self, work: F) -> Result<R, PortError>
    where
        F: for<'t, 'c> Work<&'t mut Db<'c>, R> + Send,
        R: Send,
    {
        let mut conn = self.conn().await?;
        let outcome = match conn.as_db() {
            Db::Postgres(conn) => work(&mut Db::Postgres(conn)).await,
            Db::Sqlite(conn, writer) => {
                let _turn = writer.lock().await;
                work(&mut Db::Sqlite(conn, writer)).await
            }
        };
        Ok(outcome?)
    }
}
