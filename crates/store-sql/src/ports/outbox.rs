use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use gatehouse_domain::mail::OutgoingMail;
use gatehouse_domain::ports::{Backlog, Outbox, QueuedMail};
use gatehouse_domain::{Email, PortError};
use time::OffsetDateTime;

use crate::dialect::{run, run_optional, AsDb, Db, StoreError};
use crate::schema::outbox;
use crate::sql_types::Utc;
use crate::{Connections, SqlStore};

type QueuedRow = (i64, String, String, String, String, i32);

#[async_trait]
impl<C: Connections> Outbox for SqlStore<C> {
    async fn claim_due(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<QueuedMail>, PortError> {
        self.write(async move |tx| {
            let due =
                outbox::table.filter(outbox::next_attempt_at.le(Utc(now))).order(outbox::id).limit(limit).select((
                    outbox::id,
                    outbox::recipient,
                    outbox::subject,
                    outbox::text_body,
                    outbox::html_body,
                    outbox::attempts,
                ));
            let due = match tx.as_db() {
                // SKIP LOCKED: several workers (or instances) share the queue without waiting on each other.
                Db::Postgres(c) => due.for_update().skip_locked().load::<QueuedRow>(c).await,
                // The write transaction holds SQLite's one write lock.
                Db::Sqlite(c, _) => due.load::<QueuedRow>(c).await,
            }?;
            let ids: Vec<i64> = due.iter().map(|row| row.0).collect();
            run!(tx, |c| diesel::update(outbox::table.filter(outbox::id.eq_any(&ids)))
                .set(outbox::next_attempt_at.eq(Utc(lease_until)))
                .execute(c))?;
            Ok(due
                .into_iter()
                .map(|(id, to, subject, text, html, attempts)| QueuedMail {
                    id,
                    attempts,
                    mail: OutgoingMail { to: Email::from_trusted(to), subject, text, html },
                })
                .collect())
        })
        .await
    }

    async fn mark_sent(&self, id: i64) -> Result<(), PortError> {
        run!(&mut self.conn().await?, |c| diesel::delete(outbox::table.find(id)).execute(c))?;
        Ok(())
    }

    async fn mark_failed(&self, id: i64, retry_at: Option<OffsetDateTime>, error: &str) -> Result<(), PortError> {
        let error = error.chars().take(1000).collect::<String>();
        run!(&mut self.conn().await?, |c| diesel::update(outbox::table.find(id))
            .set((
                outbox::attempts.eq(outbox::attempts + 1),
                outbox::next_attempt_at.eq(retry_at.map(Utc)),
                outbox::last_error.eq(&error),
            ))
            .execute(c))?;
        Ok(())
    }

    async fn backlog(&self, now: OffsetDateTime) -> Result<Backlog, PortError> {
        let mut conn = self.conn().await?;
        let pending = pending(&mut conn.as_db()).await?;
        let oldest = run_optional!(&mut conn, |c| outbox::table
            .filter(outbox::next_attempt_at.is_not_null())
            .select(outbox::created_at)
            .order(outbox::id)
            .first::<OffsetDateTime>(c))?;
        Ok(Backlog { pending, oldest_age_seconds: oldest.map_or(0, |at| (now - at).whole_seconds().max(0)) })
    }

    async fn pending_count(&self) -> Result<i64, PortError> {
        Ok(pending(&mut self.conn().await?.as_db()).await?)
    }
}

/// Mail not yet sent nor given up on.
async fn pending(db: &mut Db<'_>) -> Result<i64, StoreError> {
    Ok(run!(db, |c| outbox::table.filter(outbox::next_attempt_at.is_not_null()).count().get_result::<i64>(c))?)
}
