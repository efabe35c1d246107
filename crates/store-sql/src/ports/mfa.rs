use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use gatehouse_domain::mfa::{Challenge, MfaChange, MfaStore, SealedSecret, StoredTotp};
use gatehouse_domain::{PortError, TokenHash, UserId};
use time::OffsetDateTime;

use crate::dialect::{insert_rows, run, run_optional, Db, KeepPreparedDsl, StoreError};
use crate::queries::{insert_event, insert_mails};
use crate::schema::{mfa_challenges, recovery_codes, totp_factors, users};
use crate::sql_types::Utc;
use crate::{Connections, SqlStore};

/// Each "once" is one conditional statement: an UPDATE or DELETE whose
/// condition only one of several racing callers can still meet.
#[async_trait]
impl<C: Connections> MfaStore for SqlStore<C> {
    async fn totp(&self, user: UserId) -> Result<Option<StoredTotp>, PortError> {
        let found = run_optional!(&mut self.conn().await?, |c| totp_factors::table
            .find(user.get())
            .select((totp_factors::secret, totp_factors::confirmed_at.is_not_null(), totp_factors::last_step))
            .first::<(String, bool, Option<i64>)>(c))?;
        Ok(found.map(|(secret, confirmed, last_step)| StoredTotp {
            secret: SealedSecret::new(secret),
            confirmed,
            last_step,
        }))
    }

    async fn begin_totp(&self, user: UserId, secret: SealedSecret) -> Result<bool, PortError> {
        self.write(async move |tx| {
            // Replaces a pending factor; a confirmed one stays (the statement then writes nothing).
            run!(tx, |c| diesel::delete(totp_factors::table.find(user.get()))
                .filter(totp_factors::confirmed_at.is_null())
                .execute(c))?;
            let written = run!(tx, |c| diesel::insert_into(totp_factors::table)
                .values((totp_factors::user_id.eq(user.get()), totp_factors::secret.eq(secret.as_str())))
                .on_conflict_do_nothing()
                .execute(c))?;
            Ok(written == 1)
        })
        .await
    }

    async fn confirm_totp(
        &self,
        user: UserId,
        secret: &SealedSecret,
        step: i64,
        recovery_codes: Vec<TokenHash>,
        change: MfaChange,
        now: OffsetDateTime,
    ) -> Result<bool, PortError> {
        let secret = secret.as_str().to_owned();
        self.write(async move |tx| {
            let confirmed = run!(tx, |c| diesel::update(totp_factors::table.find(user.get()))
                .filter(totp_factors::confirmed_at.is_null().and(totp_factors::secret.eq(&secret)))
                .set((totp_factors::confirmed_at.eq(Utc(now)), totp_factors::last_step.eq(step)))
                .keep_prepared()
                .execute(c))?;
            if confirmed == 0 {
                return Ok(false);
            }
            set_mfa_enabled(tx, user, true).await?;
            replace_codes(tx, user, &recovery_codes).await?;
            settle(tx, &change, now).await?;
            Ok(true)
        })
        .await
    }

    async fn spend_totp_step(&self, user: UserId, step: i64) -> Result<bool, PortError> {
        let spent = run!(&mut self.conn().await?, |c| diesel::update(totp_factors::table.find(user.get()))
            .filter(totp_factors::confirmed_at.is_not_null())
            .filter(totp_factors::last_step.is_null().or(totp_factors::last_step.lt(step)))
            .set(totp_factors::last_step.eq(step))
            .keep_prepared()
            .execute(c))?;
        Ok(spent == 1)
    }

    async fn spend_recovery_code(
        &self,
        user: UserId,
        code: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<bool, PortError> {
        let spent =
            run!(&mut self.conn().await?, |c| diesel::update(recovery_codes::table.find((user.get(), code.as_str())))
                .filter(recovery_codes::used_at.is_null())
                .set(recovery_codes::used_at.eq(Utc(now)))
                .keep_prepared()
                .execute(c))?;
        Ok(spent == 1)
    }

    async fn replace_recovery_codes(&self, user: UserId, codes: Vec<TokenHash>) -> Result<(), PortError> {
        self.write(async move |tx| replace_codes(tx, user, &codes).await).await
    }

    async fn remove_totp(&self, user: UserId, change: MfaChange, now: OffsetDateTime) -> Result<bool, PortError> {
        self.write(async move |tx| {
            let removed = run!(tx, |c| diesel::delete(totp_factors::table.find(user.get()))
                .filter(totp_factors::confirmed_at.is_not_null())
                .execute(c))?;
            if removed == 0 {
                return Ok(false);
            }
            run!(tx, |c| diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user.get())))
                .execute(c))?;
            run!(tx, |c| diesel::delete(mfa_challenges::table.filter(mfa_challenges::user_id.eq(user.get())))
                .execute(c))?;
            set_mfa_enabled(tx, user, false).await?;
            settle(tx, &change, now).await?;
            Ok(true)
        })
        .await
    }

    async fn open_challenge(
        &self,
        token: &TokenHash,
        user: UserId,
        expires_at: OffsetDateTime,
    ) -> Result<(), PortError> {
        run!(&mut self.conn().await?, |c| diesel::insert_into(mfa_challenges::table)
            .values((
                mfa_challenges::token_hash.eq(token.as_str()),
                mfa_challenges::user_id.eq(user.get()),
                mfa_challenges::expires_at.eq(Utc(expires_at)),
            ))
            .execute(c))?;
        Ok(())
    }

    async fn challenge(&self, token: &TokenHash, now: OffsetDateTime) -> Result<Option<Challenge>, PortError> {
        let found = run_optional!(&mut self.conn().await?, |c| mfa_challenges::table
            .find(token.as_str())
            .filter(mfa_challenges::expires_at.gt(Utc(now)))
            .select((mfa_challenges::user_id, mfa_challenges::failures))
            .first::<(i64, i64)>(c))?;
        Ok(found.map(|(user_id, failures)| Challenge { user_id: UserId::new(user_id), failures }))
    }

    async fn fail_challenge(&self, token: &TokenHash) -> Result<i64, PortError> {
        let failures =
            run_optional!(&mut self.conn().await?, |c| diesel::update(mfa_challenges::table.find(token.as_str()))
                .set(mfa_challenges::failures.eq(mfa_challenges::failures + 1))
                .returning(mfa_challenges::failures)
                .keep_prepared()
                .get_result::<i64>(c))?;
        Ok(failures.unwrap_or(i64::MAX))
    }

    async fn close_challenge(&self, token: &TokenHash) -> Result<bool, PortError> {
        let closed =
            run!(&mut self.conn().await?, |c| diesel::delete(mfa_challenges::table.find(token.as_str())).execute(c))?;
        Ok(closed == 1)
    }
}

async fn set_mfa_enabled(db: &mut Db<'_>, user: UserId, enabled: bool) -> Result<(), StoreError> {
    run!(db, |c| diesel::update(users::table.find(user.get()))
        .set(users::mfa_enabled.eq(enabled))
        .keep_prepared()
        .execute(c))?;
    Ok(())
}

async fn replace_codes(db: &mut Db<'_>, user: UserId, codes: &[TokenHash]) -> Result<(), StoreError> {
    run!(db, |c| diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user.get()))).execute(c))?;
    let rows: Vec<_> = codes
        .iter()
        .map(|code| (recovery_codes::user_id.eq(user.get()), recovery_codes::code_hash.eq(code.as_str())))
        .collect();
    if !rows.is_empty() {
        insert_rows!(db, recovery_codes::table, &rows)?;
    }
    Ok(())
}

/// The notice and the trail entry of turning the factor on or off.
async fn settle(db: &mut Db<'_>, change: &MfaChange, now: OffsetDateTime) -> Result<(), StoreError> {
    insert_mails(db, std::slice::from_ref(&change.mail), now).await?;
    insert_event(db, &change.event, now).await
}
