//! The two column types whose SQL differs between the backends, so that one
//! schema serves both: a timestamp (`timestamptz` on PostgreSQL, RFC 3339 text
//! in UTC on SQLite) and a UUID (`uuid`, or its hyphenated text). Each binds and
//! reads through diesel's own conversion for the backend's native type.

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::expression::AsExpression;
use diesel::pg::Pg;
use diesel::query_builder::QueryId;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::{SqlOrd, SqlType, Text, Timestamptz, TimestamptzSqlite};
use diesel::sqlite::Sqlite;
use time::OffsetDateTime;
use uuid::Uuid;

/// A point in time, always written in UTC.
#[derive(Debug, Clone, Copy, Default, QueryId, SqlType)]
#[diesel(postgres_type(oid = 1184, array_oid = 1185))]
#[diesel(sqlite_type(name = "Text"))]
pub struct UtcTimestamp;

/// Text in UTC with a fixed layout orders as time does, so `min` and comparisons hold on SQLite too.
impl SqlOrd for UtcTimestamp {}

/// A UUID key.
#[derive(Debug, Clone, Copy, Default, QueryId, SqlType)]
#[diesel(postgres_type(oid = 2950, array_oid = 2951))]
#[diesel(sqlite_type(name = "Text"))]
pub struct UuidKey;

/// A time bound as a query parameter: `.gt(Utc(now))`. (Reads give `OffsetDateTime` itself;
/// diesel's blanket impls keep a foreign type from being bound directly.)
#[derive(Debug, Clone, Copy, AsExpression)]
#[diesel(sql_type = UtcTimestamp)]
pub struct Utc(pub OffsetDateTime);

/// A UUID bound as a query parameter: `.eq(Id(session_id))`.
#[derive(Debug, Clone, Copy, AsExpression)]
#[diesel(sql_type = UuidKey)]
pub struct Id(pub Uuid);

/// Binds `$param` and reads `$value` through diesel's own conversion for the
/// backend's native type.
macro_rules! native {
    ($sql:ty, $backend:ty, $native:ty, $param:ty => $value:ty) => {
        impl ToSql<$sql, $backend> for $param {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, $backend>) -> serialize::Result {
                ToSql::<$native, $backend>::to_sql(&self.0, out)
            }
        }

        impl FromSql<$sql, $backend> for $value {
            fn from_sql(value: <$backend as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
                FromSql::<$native, $backend>::from_sql(value)
            }
        }
    };
}

native!(UtcTimestamp, Pg, Timestamptz, Utc => OffsetDateTime);
native!(UtcTimestamp, Sqlite, TimestamptzSqlite, Utc => OffsetDateTime);
native!(UuidKey, Pg, diesel::sql_types::Uuid, Id => Uuid);

/// SQLite has no UUID type: the hyphenated text.
impl ToSql<UuidKey, Sqlite> for Id {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(self.0.hyphenated().to_string());
        Ok(serialize::IsNull::No)
    }
}

impl FromSql<UuidKey, Sqlite> for Uuid {
    fn from_sql(value: <Sqlite as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<Text, Sqlite>>::from_sql(value)?;
        Ok(Uuid::parse_str(&text)?)
    }
}
