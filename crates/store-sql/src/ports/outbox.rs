use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use gatehouse_domain::mail::OutgoingMail;
use gatehouse_domain::ports::{Backlog, Outbox, QueuedMail};
use gatehouse_domain::{Email, PortError};
use time::OffsetDateTime;

use crate::dialect::{run, run_optional, AsDb, Db, KeepPreparedDsl, StoreError};
use crate::schema::outbox;
use crate::sql_types::Utc;
use crate::{Connections, SqlStore};

type QueuedRow = (i64, String, String, String, String, i32, OffsetDateTime);

#[async_trait]
impl<C: Connections> Outbox for SqlStore<C> {
    async fn claim_next(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        owner: &str,
    ) -> Result<Option<QueuedMail>, PortError> {
        let owner = owner.to_owned();
        self.write(async move |tx| {
            let due = outbox::table.filter(outbox::next_attempt_at.le(Utc(now))).order(outbox::id).select((
                outbox::id,
                outbox::recipient,
                outbox::subject,
                outbox::text_body,
                outbox::html_body,
                outbox::attempts,
                outbox::created_at,
            ));
            let due = match tx.as_db() {
                // SKIP LOCKED: several workers (or instances) share the queue without waiting on each other.
                Db::Postgres(c) => due.for_update().skip_locked().first::<QueuedRow>(c).await,
                // The write transaction holds SQLite's one write lock.
                Db::Sqlite(c, _) => due.first::<QueuedRow>(c).await,
            }
            .optional()?;
            let Some((id, to, subject, text, html, attempts, created_at)) = due else { return Ok(None) };
            run!(tx, |c| diesel::update(outbox::table.find(id))
                .set((outbox::next_attempt_at.eq(Utc(lease_until)), outbox::leased_by.eq(&owner)))
                .keep_prepared()
                .execute(c))?;
            let mail = OutgoingMail { to: Email::from_trusted(to), subject, text, html };
            Ok(Some(QueuedMail { id, attempts, mail, created_at }))
        })
        .await
    }

    async fn mark_sent(&self, id: i64, owner: &str) -> Result<bool, PortError> {
        let held = outbox::table.find(id).filter(outbox::leased_by.eq(owner));
        Ok(run!(&mut self.conn().await?, |c| diesel::delete(held).execute(c))? > 0)
    }

    async fn mark_failed(
        &self,
        id: i64,
        owner: &str,
        retry_at: Option<OffsetDateTime>,
        error: &str,
    ) -> Result<bool, PortError> {
        let error = error.chars().take(1000).collect::<String>();
        let held = outbox::table.find(id).filter(outbox::leased_by.eq(owner));
        let marked = run!(&mut self.conn().await?, |c| diesel::update(held)
            .set((
                outbox::attempts.eq(outbox::attempts + 1),
                outbox::next_attempt_at.eq(retry_at.map(Utc)),
                outbox::last_error.eq(&error),
            ))
            .keep_prepared()
            .execute(c))?;
        Ok(marked > 0)
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
