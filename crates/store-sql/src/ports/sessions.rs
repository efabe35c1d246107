use async_trait::async_trait;
use diesel::dsl::case_when;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use gatehouse_domain::ports::{SessionStore, Throttle, ThrottleKey, ThrottleWindow};
use gatehouse_domain::session::{AuthMethods, NewRefreshToken, NewSession, Rotation, SessionInfo, SessionState};
use gatehouse_domain::{PortError, SessionId, TokenHash, User, UserId};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::dialect::{run, run_locked, run_optional, AsDb, KeepPreparedDsl};
use crate::queries::{clear_throttle, insert_event, insert_refresh, release_throttle, revoke_user_sessions};
use crate::rows::{user_from_rows, ProfileRow, UserRow, UserWithGroupRow};
use crate::schema::{groups, profiles, refresh_tokens, sessions, throttle_windows, user_groups, users};
use crate::sql_types::{Id, Utc, UtcTimestamp};
use crate::{Connections, SqlStore};

#[async_trait]
impl<C: Connections> SessionStore for SqlStore<C> {
    async fn start_session(&self, session: NewSession) -> Result<(), PortError> {
        self.write(async move |tx| {
            let id = session.id.get();
            run!(tx, |c| diesel::insert_into(sessions::table)
                .values((
                    sessions::id.eq(Id(id)),
                    sessions::user_id.eq(session.user_id.get()),
                    sessions::created_at.eq(Utc(session.created_at)),
                    sessions::last_used_at.eq(Utc(session.created_at)),
                    sessions::expires_at.eq(Utc(session.refresh.expires_at)),
                    sessions::user_agent.eq(&session.client.user_agent),
                    sessions::ip.eq(&session.client.ip),
                    sessions::amr.eq(session.amr.as_str()),
                ))
                .execute(c))?;
            insert_refresh(tx, id, &session.refresh, session.created_at).await?;
            run!(tx, |c| diesel::update(users::table.find(session.user_id.get()))
                .set(users::last_login.eq(Utc(session.created_at)))
                .keep_prepared()
                .execute(c))?;
            if let Some(rehash) = &session.rehash {
                run!(tx, |c| diesel::update(users::table.find(session.user_id.get()))
                    .filter(users::password_hash.eq(rehash.from.expose()))
                    .set(users::password_hash.eq(rehash.to.expose()))
                    .keep_prepared()
                    .execute(c))?;
            }
            if let Some(event) = &session.event {
                insert_event(tx, event, session.created_at).await?;
            }
            if let Some(key) = &session.throttle.clear {
                clear_throttle(tx, key).await?;
            }
            release_throttle(tx, &session.throttle.release).await?;
            Ok(())
        })
        .await
    }

    async fn refresh_session(&self, token: &TokenHash) -> Result<Option<SessionId>, PortError> {
        let session = run_optional!(&mut self.conn().await?, |c| refresh_tokens::table
            .find(token.as_str())
            .select(refresh_tokens::session_id)
            .first::<Uuid>(c))?;
        Ok(session.map(SessionId::new))
    }

    async fn rotate_refresh(
        &self,
        presented: &TokenHash,
        next: NewRefreshToken,
        now: OffsetDateTime,
        grace: Duration,
        client_ip: Option<String>,
    ) -> Result<Rotation, PortError> {
        let presented = presented.as_str().to_owned();
        self.write(async move |tx| {
            // The lock makes concurrent presenters of one token queue here.
            let token = run_locked!(
                tx,
                refresh_tokens::table.find(&presented).select((
                    refresh_tokens::session_id,
                    refresh_tokens::expires_at,
                    refresh_tokens::used_at
                )),
                |query, c| query.first::<(Uuid, OffsetDateTime, Option<OffsetDateTime>)>(c)
            )
            .optional()?;
            let Some((session_id, expires_at, used_at)) = token else { return Ok(Rotation::Unknown) };
            let (user_id, revoked_at, is_active, amr) = run!(tx, |c| sessions::table
                .inner_join(users::table)
                .filter(sessions::id.eq(Id(session_id)))
                .select((sessions::user_id, sessions::revoked_at, users::is_active, sessions::amr))
                .first::<(i64, Option<OffsetDateTime>, bool, String)>(c))?;
            let amr = AuthMethods::parse(amr.split(' ')).unwrap_or_default();
            if revoked_at.is_some() || !is_active {
                return Ok(Rotation::SessionDead);
            }
            match used_at {
                // With no grace any replay is reuse, even from a caller whose
                // clock read earlier than the spender's.
                Some(spent) if grace <= Duration::ZERO || now - spent >= grace => {
                    run!(tx, |c| diesel::update(sessions::table.find(Id(session_id)))
                        .filter(sessions::revoked_at.is_null())
                        .set(sessions::revoked_at.eq(Utc(now)))
                        .keep_prepared()
                        .execute(c))?;
                    return Ok(Rotation::Reused {
                        user_id: UserId::new(user_id),
                        session_id: SessionId::new(session_id),
                    });
                }
                // A replay within the grace window: its successor is stored
                // already, and the session was used a moment ago.
                Some(_) => {}
                None if expires_at <= now => return Ok(Rotation::Expired),
                None => {
                    run!(tx, |c| diesel::update(refresh_tokens::table.find(&presented))
                        .set(refresh_tokens::used_at.eq(Utc(now)))
                        .keep_prepared()
                        .execute(c))?;
                    insert_refresh(tx, session_id, &next, now).await?;
                    let used = (sessions::last_used_at.eq(Utc(now)), sessions::expires_at.eq(Utc(next.expires_at)));
                    let from = client_ip.as_ref().map(|ip| sessions::ip.eq(ip));
                    run!(tx, |c| diesel::update(sessions::table.find(Id(session_id)))
                        .set((used, from))
                        .keep_prepared()
                        .execute(c))?;
                }
            }
            Ok(Rotation::Rotated { user_id: UserId::new(user_id), session_id: SessionId::new(session_id), amr })
        })
        .await
    }

    async fn list_sessions(&self, user_id: UserId, now: OffsetDateTime) -> Result<Vec<SessionInfo>, PortError> {
        let rows = run!(&mut self.conn().await?, |c| sessions::table
            .filter(sessions::user_id.eq(user_id.get()))
            .filter(sessions::revoked_at.is_null())
            .filter(sessions::expires_at.gt(Utc(now)))
            .order((sessions::last_used_at.desc(), sessions::created_at.desc()))
            .select((sessions::id, sessions::created_at, sessions::last_used_at, sessions::user_agent, sessions::ip))
            .load::<(Uuid, OffsetDateTime, OffsetDateTime, Option<String>, Option<String>)>(c))?;
        Ok(rows
            .into_iter()
            .map(|(id, created_at, last_used_at, user_agent, ip)| SessionInfo {
                id: SessionId::new(id),
                created_at,
                last_used_at,
                user_agent,
                ip,
            })
            .collect())
    }

    async fn session_state(&self, id: SessionId, now: OffsetDateTime) -> Result<SessionState, PortError> {
        let found = run_optional!(&mut self.conn().await?, |c| sessions::table
            .inner_join(users::table)
            .filter(sessions::id.eq(Id(id.get())))
            .select((sessions::user_id, sessions::expires_at, sessions::revoked_at, users::is_active))
            .first::<(i64, OffsetDateTime, Option<OffsetDateTime>, bool)>(c))?;
        Ok(match found {
            Some((user_id, expires_at, None, true)) if expires_at > now => {
                SessionState::Live { user_id: UserId::new(user_id) }
            }
            _ => SessionState::Dead,
        })
    }

    async fn session_user(&self, id: SessionId, now: OffsetDateTime) -> Result<Option<User>, PortError> {
        let rows = run!(&mut self.conn().await?, |c| users::table
            .inner_join(sessions::table)
            .left_join(profiles::table)
            .left_join(user_groups::table.inner_join(groups::table))
            .filter(sessions::id.eq(Id(id.get())))
            .filter(sessions::revoked_at.is_null())
            .filter(sessions::expires_at.gt(Utc(now)))
            .filter(users::is_active.eq(true))
            .select((UserRow::as_select(), Option::<ProfileRow>::as_select(), groups::name.nullable()))
            .load::<UserWithGroupRow>(c))?;
        Ok(user_from_rows(rows))
    }

    async fn revoke_session(&self, user_id: UserId, id: SessionId, now: OffsetDateTime) -> Result<bool, PortError> {
        let revoked = run!(&mut self.conn().await?, |c| diesel::update(sessions::table)
            .filter(sessions::id.eq(Id(id.get())))
            .filter(sessions::user_id.eq(user_id.get()))
            .filter(sessions::revoked_at.is_null())
            .set(sessions::revoked_at.eq(Utc(now)))
            .keep_prepared()
            .execute(c))?;
        Ok(revoked > 0)
    }

    async fn revoke_all_sessions(&self, user_id: UserId, now: OffsetDateTime) -> Result<(), PortError> {
        revoke_user_sessions(&mut self.conn().await?.as_db(), user_id.get(), None, now).await?;
        Ok(())
    }
}

#[async_trait]
impl<C: Connections> Throttle for SqlStore<C> {
    async fn reserve(
        &self,
        key: &ThrottleKey,
        now: OffsetDateTime,
        window: Duration,
    ) -> Result<ThrottleWindow, PortError> {
        self.autocommit(async move |db| {
            // One upsert: concurrent attempts queue on the key's row, and each
            // sees the count the one before it left.
            let over = throttle_windows::opened_at.le(Utc(now - window));
            let row = (throttle_windows::scope.eq(key.scope()), throttle_windows::subject.eq(key.subject()));
            let first = (throttle_windows::opened_at.eq(Utc(now)), throttle_windows::hits.eq(1_i64));
            let (hits, opened_at) = run!(db, |c| diesel::insert_into(throttle_windows::table)
                .values((row, first))
                .on_conflict((throttle_windows::scope, throttle_windows::subject))
                .do_update()
                .set((
                    throttle_windows::hits
                        .eq(case_when::<_, _, BigInt>(over, 1_i64).otherwise(throttle_windows::hits + 1_i64)),
                    throttle_windows::opened_at
                        .eq(case_when::<_, _, UtcTimestamp>(over, Utc(now)).otherwise(throttle_windows::opened_at)),
                ))
                .returning((throttle_windows::hits, throttle_windows::opened_at))
                .keep_prepared()
                .get_result::<(i64, OffsetDateTime)>(c))?;
            Ok(ThrottleWindow { hits, opened_at })
        })
        .await
    }

    async fn release(&self, keys: &[ThrottleKey]) -> Result<(), PortError> {
        self.autocommit(async move |db| release_throttle(db, keys).await).await
    }

    async fn clear(&self, key: &ThrottleKey) -> Result<(), PortError> {
        Ok(clear_throttle(&mut self.conn().await?.as_db(), key).await?)
    }

    /// A task of the caller's runtime (a request worker's) gives them back.
    fn release_later(&self, keys: Vec<ThrottleKey>) {
        let store = self.clone();
        let give_back = async move {
            if let Err(error) = store.release(&keys).await {
                let error = &error as &dyn std::error::Error;
                tracing::warn!(error, "login attempts not given back: they count until their window closes");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(give_back)),
            Err(_) => tracing::warn!("login attempts not given back outside a runtime"),
        }
    }
}
