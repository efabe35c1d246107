//! The two databases a Django project runs on, as this importer needs them:
//! which tables have which columns, and a table's rows as text.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::SourceError;

/// Every value of a row as text (`None` for NULL), or why the row cannot be read.
pub type TextRow = Result<Vec<Option<String>>, String>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub enum Source {
    Postgres(tokio_postgres::Client),
    Sqlite(Arc<Mutex<Connection>>),
}

impl Source {
    pub async fn open(url: &str) -> Result<Self, SourceError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let connection = Connection::open_with_flags(path, flags)
                .map_err(|e| SourceError::Unreachable(format!("{path}: {e}")))?;
            return Ok(Self::Sqlite(Arc::new(Mutex::new(connection))));
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(SourceError::Url);
        }
        let connecting = tokio::time::timeout(CONNECT_TIMEOUT, tokio_postgres::connect(url, NoTls));
        let (client, connection) = connecting
            .await
            .map_err(|_| SourceError::Unreachable(format!("no answer in {} s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| SourceError::Unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "the Django database connection failed");
            }
        });
        // Times print in UTC, whatever the server's zone.
        client.batch_execute("SET TIME ZONE 'UTC'").await.map_err(|e| SourceError::Unreachable(e.to_string()))?;
        Ok(Self::Postgres(client))
    }

    /// Every table of the database (PostgreSQL: of the current schema) with its columns.
    pub async fn catalog(&self) -> Result<BTreeMap<String, Vec<String>>, SourceError> {
        let mut catalog: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let unreadable = |problem: String| SourceError::Read { table: "(the catalog)".into(), problem };
        match self {
            Self::Postgres(client) => {
                let query = "SELECT c.table_name, c.column_name FROM information_schema.columns c \
                             JOIN information_schema.tables t USING (table_schema, table_name) \
                             WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' \
                             ORDER BY c.table_name, c.ordinal_position";
                for row in simple_rows(client, query).await.map_err(unreadable)? {
                    if let [Some(table), Some(column)] = &row[..] {
                        catalog.entry(table.clone()).or_default().push(column.clone());
                    }
                }
            }
            Self::Sqlite(connection) => {
                let query = "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
                             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.cid";
                for row in sqlite_rows(connection.clone(), query.to_owned()).await.map_err(unreadable)? {
                    if let Ok([Some(table), Some(column)]) = row.as_deref() {
                        catalog.entry(table.clone()).or_default().push(column.clone());
                    }
                }
            }
        }
        if catalog.is_empty() {
            return Err(SourceError::Schema("the database has no tables: is it a Django database?".into()));
        }
        Ok(catalog)
    }

    /// The named columns of every row of `table` (both names from the catalog).
    pub async fn select(&self, table: &str, columns: &[&str]) -> Result<Vec<TextRow>, SourceError> {
        let list: Vec<String> = columns.iter().map(|c| quoted(c)).collect();
        let order = if columns.contains(&"id") { " ORDER BY \"id\"" } else { "" };
        let query = format!("SELECT {} FROM {}{order}", list.join(", "), quoted(table));
        let failed = |problem: String| SourceError::Read { table: table.to_owned(), problem };
        match self {
            Self::Postgres(client) => {
                Ok(simple_rows(client, &query).await.map_err(failed)?.into_iter().map(Ok).collect())
            }
            Self::Sqlite(connection) => sqlite_rows(connection.clone(), query).await.map_err(failed),
        }
    }
}

/// A double-quoted SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The simple query protocol answers every value as text, whatever its type.
async fn simple_rows(client: &tokio_postgres::Client, query: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let messages = client.simple_query(query).await.map_err(|e| e.to_string())?;
    Ok(messages
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect()),
            _ => None,
        })
        .collect())
}

async fn sqlite_rows(connection: Arc<Mutex<Connection>>, query: String) -> Result<Vec<TextRow>, String> {
    let reading = tokio::task::spawn_blocking(move || {
        let connection = connection.lock().map_err(|_| "the SQLite connection was poisoned".to_owned())?;
        let mut statement = connection.prepare(&query).map_err(|e| e.to_string())?;
        let width = statement.column_count();
        let mut rows = statement.query([]).map_err(|e| e.to_string())?;
        let mut read = Vec::new();
        while let Some(row) = rows.next().map_err(|e| e.to_string())? {
            read.push((0..width).map(|i| row.get_ref(i).map_err(|e| e.to_string()).and_then(as_text)).collect());
        }
        Ok(read)
    });
    reading.await.map_err(|e| e.to_string())?
}

/// SQLite's dynamic values as text; bytes that are not UTF-8 make the row unreadable.
fn as_text(value: ValueRef<'_>) -> Result<Option<String>, String> {
    match value {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(n) => Ok(Some(n.to_string())),
        ValueRef::Real(x) => Ok(Some(x.to_string())),
        ValueRef::Text(bytes) => String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| "a value is not UTF-8".into()),
        ValueRef::Blob(_) => Err("a value is binary".into()),
    }
}
