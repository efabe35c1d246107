use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use gatehouse_domain::audit::{AuditEvent, AuditPage, AuditQuery};
use gatehouse_domain::ports::{AuditLog, StoreHealth};
use gatehouse_domain::PortError;
use time::OffsetDateTime;

use crate::dialect::{run, AsDb};
use crate::queries::{filtered_events, insert_event};
use crate::rows::{audit_record, AuditRow};
use crate::schema::audit_events;
use crate::{Connections, SqlStore};

#[async_trait]
impl<C: Connections> AuditLog for SqlStore<C> {
    async fn record(&self, event: AuditEvent, at: OffsetDateTime) -> Result<(), PortError> {
        insert_event(&mut self.conn().await?.as_db(), &event, at).await?;
        Ok(())
    }

    async fn list_events(&self, query: &AuditQuery) -> Result<AuditPage, PortError> {
        let mut conn = self.conn().await?;
        let count = run!(&mut conn, |c| filtered_events!(query).count().get_result::<i64>(c))?;
        let rows = run!(&mut conn, |c| filtered_events!(query)
            .order(audit_events::id.desc())
            .limit(i64::from(query.page_size))
            .offset(query.offset())
            .load::<AuditRow>(c))?;
        Ok(AuditPage { count, results: rows.into_iter().map(audit_record).collect() })
    }
}

#[async_trait]
impl<C: Connections> StoreHealth for SqlStore<C> {
    async fn ping(&self) -> Result<(), PortError> {
        run!(&mut self.conn().await?, |c| diesel::sql_query("SELECT 1").execute(c))?;
        Ok(())
    }
}
