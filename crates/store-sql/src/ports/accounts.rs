use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use gatehouse_domain::mail::OutgoingMail;
use gatehouse_domain::ports::{
    AccountStore, CreateAccountError, Credentials, EmailConfirmation, NewAccount, NewOneTimeToken, TokenPurpose,
};
use gatehouse_domain::user::{ProfilePatch, ADMIN_USER_GROUP, REGULAR_USER_GROUP};
use gatehouse_domain::{Email, EmailKey, PasswordHash, PortError, SessionId, TokenHash, User, UserId};
use time::OffsetDateTime;

use crate::dialect::{run, run_optional, AsDb, KeepPreparedDsl, StoreError};
use crate::queries::{
    credentials, credentials_of, insert_mails, insert_token, insert_user, join_groups, kill_tokens, load_credentials,
    load_user, patch_profile, require_user, revoke_user_sessions, take_live_token, CredentialsRow,
};
use crate::rows::NewUserRow;
use crate::schema::{one_time_tokens, profiles, users};
use crate::sql_types::Utc;
use crate::{Connections, SqlStore};

#[async_trait]
impl<C: Connections> AccountStore for SqlStore<C> {
    async fn create_account(
        &self,
        account: NewAccount,
        token: NewOneTimeToken,
        mails: Vec<OutgoingMail>,
    ) -> Result<User, CreateAccountError> {
        self.write(async move |tx| {
            let key = account.email.key();
            let row = NewUserRow {
                email: account.email.as_ref(),
                email_key: key.as_str(),
                password_hash: Some(account.password_hash.expose()),
                first_name: &account.first_name,
                last_name: &account.last_name,
                is_active: true,
                is_staff: false,
                is_verified: account.is_verified,
                date_joined: Utc(account.date_joined),
            };
            let id = insert_user(tx, &row, &[REGULAR_USER_GROUP]).await?;
            insert_token(tx, id, &token).await?;
            insert_mails(tx, &mails, account.date_joined).await?;
            require_user(tx, id).await
        })
        .await
    }

    async fn issue_token(
        &self,
        user_id: UserId,
        token: NewOneTimeToken,
        mails: Vec<OutgoingMail>,
    ) -> Result<(), PortError> {
        self.write(async move |tx| {
            insert_token(tx, user_id.get(), &token).await?;
            insert_mails(tx, &mails, token.created_at).await
        })
        .await
    }

    async fn enqueue_mails(&self, mails: Vec<OutgoingMail>) -> Result<(), PortError> {
        let mut conn = self.conn().await?;
        Ok(insert_mails(&mut conn.as_db(), &mails, OffsetDateTime::now_utc()).await?)
    }

    async fn find_credentials(&self, email: &EmailKey) -> Result<Option<Credentials>, PortError> {
        let rows = run!(&mut self.conn().await?, |c| credentials_of!()
            .filter(users::email_key.eq(email.as_str()))
            .load::<CredentialsRow>(c))?;
        Ok(credentials(rows))
    }

    async fn find_user_by_email(&self, email: &EmailKey) -> Result<Option<User>, PortError> {
        Ok(self.find_credentials(email).await?.map(|found| found.user))
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>, PortError> {
        Ok(load_user(&mut self.conn().await?.as_db(), id.get()).await?)
    }

    async fn confirm_email(&self, token: &TokenHash, now: OffsetDateTime) -> Result<EmailConfirmation, PortError> {
        let hash = token.as_str().to_owned();
        let outcome: Result<_, StoreError> = self
            .write(async move |tx| {
                let purposes = [TokenPurpose::VerifyEmail, TokenPurpose::ChangeEmail];
                let Some((user_id, purpose, new_email)) = take_live_token(tx, &hash, &purposes, now).await? else {
                    return Ok(EmailConfirmation::NotLive);
                };
                // Every verification link of the user is spent either way: a mailbox is proven.
                kill_tokens(tx, user_id, TokenPurpose::VerifyEmail, now).await?;
                let (Some(TokenPurpose::ChangeEmail), Some(new_email)) = (TokenPurpose::parse(&purpose), new_email)
                else {
                    run!(tx, |c| diesel::update(users::table.find(user_id))
                        .set(users::is_verified.eq(true))
                        .keep_prepared()
                        .execute(c))?;
                    return Ok(EmailConfirmation::Verified(require_user(tx, user_id).await?));
                };
                let new_email = Email::from_trusted(new_email);
                let key = new_email.key();
                let taken = run_optional!(tx, |c| users::table
                    .filter(users::email_key.eq(key.as_str()))
                    .filter(users::id.ne(user_id))
                    .select(users::id)
                    .first::<i64>(c))?;
                if taken.is_some() {
                    return Ok(EmailConfirmation::AddressTaken);
                }
                run!(tx, |c| diesel::update(users::table.find(user_id))
                    .set((
                        users::email.eq(new_email.as_ref()),
                        users::email_key.eq(key.as_str()),
                        users::is_verified.eq(true),
                    ))
                    .keep_prepared()
                    .execute(c))
                .map_err(StoreError::on_email)?;
                kill_tokens(tx, user_id, TokenPurpose::ChangeEmail, now).await?;
                kill_tokens(tx, user_id, TokenPurpose::ResetPassword, now).await?;
                Ok(EmailConfirmation::Changed(require_user(tx, user_id).await?))
            })
            .await;
        match outcome {
            // Another account took the address between the check and the update.
            Err(StoreError::EmailTaken) => Ok(EmailConfirmation::AddressTaken),
            other => other.map_err(Into::into),
        }
    }

    async fn update_profile(&self, id: UserId, patch: ProfilePatch) -> Result<Option<User>, PortError> {
        self.write(async move |tx| {
            let names = (
                patch.first_name.as_ref().map(|n| users::first_name.eq(n)),
                patch.last_name.as_ref().map(|n| users::last_name.eq(n)),
            );
            let found = run!(tx, |c| diesel::update(users::table.find(id.get()))
                .set((users::id.eq(users::id), names))
                .keep_prepared()
                .execute(c))?;
            if found == 0 {
                return Ok(None);
            }
            patch_profile(tx, id.get(), &patch).await?;
            load_user(tx, id.get()).await
        })
        .await
    }

    async fn find_credentials_by_id(&self, id: UserId) -> Result<Option<Credentials>, PortError> {
        Ok(load_credentials(&mut self.conn().await?.as_db(), id.get()).await?)
    }

    async fn peek_token(
        &self,
        token: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<User>, PortError> {
        let mut conn = self.conn().await?;
        let id = run_optional!(&mut conn, |c| one_time_tokens::table
            .filter(one_time_tokens::token_hash.eq(token.as_str()))
            .filter(one_time_tokens::purpose.eq(purpose.as_str()))
            .filter(one_time_tokens::used_at.is_null())
            .filter(one_time_tokens::expires_at.gt(Utc(now)))
            .select(one_time_tokens::user_id)
            .first::<i64>(c))?;
        Ok(match id {
            Some(id) => load_user(&mut conn.as_db(), id).await?,
            None => None,
        })
    }

    async fn change_password(
        &self,
        id: UserId,
        hash: PasswordHash,
        keep: Option<SessionId>,
        now: OffsetDateTime,
        notice: OutgoingMail,
    ) -> Result<(), PortError> {
        self.write(async move |tx| {
            run!(tx, |c| diesel::update(users::table.find(id.get()))
                .set(users::password_hash.eq(hash.expose()))
                .keep_prepared()
                .execute(c))?;
            revoke_user_sessions(tx, id.get(), keep, now).await?;
            kill_tokens(tx, id.get(), TokenPurpose::ResetPassword, now).await?;
            insert_mails(tx, std::slice::from_ref(&notice), now).await
        })
        .await
    }

    async fn reset_password(
        &self,
        token: &TokenHash,
        hash: PasswordHash,
        now: OffsetDateTime,
        notice: OutgoingMail,
    ) -> Result<Option<User>, PortError> {
        let token = token.as_str().to_owned();
        self.write(async move |tx| {
            let purpose = TokenPurpose::ResetPassword;
            // The lock makes concurrent confirms queue; the first spends the token.
            let Some((user_id, _, _)) = take_live_token(tx, &token, &[purpose], now).await? else {
                return Ok(None);
            };
            kill_tokens(tx, user_id, purpose, now).await?;
            run!(tx, |c| diesel::update(users::table.find(user_id))
                .set((users::password_hash.eq(hash.expose()), users::is_verified.eq(true)))
                .keep_prepared()
                .execute(c))?;
            revoke_user_sessions(tx, user_id, None, now).await?;
            insert_mails(tx, std::slice::from_ref(&notice), now).await?;
            load_user(tx, user_id).await
        })
        .await
    }

    async fn delete_account(&self, id: UserId, goodbye: OutgoingMail) -> Result<bool, PortError> {
        self.write(async move |tx| {
            let deleted = run!(tx, |c| diesel::delete(users::table.find(id.get())).execute(c))?;
            if deleted > 0 {
                insert_mails(tx, std::slice::from_ref(&goodbye), OffsetDateTime::now_utc()).await?;
            }
            Ok(deleted > 0)
        })
        .await
    }

    async fn upsert_superuser(&self, email: Email, hash: PasswordHash, now: OffsetDateTime) -> Result<User, PortError> {
        self.write(async move |tx| {
            let key = email.key();
            let superuser = (
                users::password_hash.eq(hash.expose()),
                users::is_superuser.eq(true),
                users::is_staff.eq(true),
                users::is_verified.eq(true),
                users::is_active.eq(true),
            );
            // One upsert: safe against a concurrent signup of the same address.
            let id = run!(tx, |c| diesel::insert_into(users::table)
                .values((
                    users::email.eq(email.as_ref()),
                    users::email_key.eq(key.as_str()),
                    users::date_joined.eq(Utc(now)),
                    superuser,
                ))
                .on_conflict(users::email_key)
                .do_update()
                .set(superuser)
                .returning(users::id)
                .keep_prepared()
                .get_result::<i64>(c))?;
            run!(tx, |c| diesel::insert_into(profiles::table)
                .values(profiles::user_id.eq(id))
                .on_conflict_do_nothing()
                .execute(c))?;
            join_groups(tx, id, &[REGULAR_USER_GROUP, ADMIN_USER_GROUP]).await?;
            require_user(tx, id).await
        })
        .await
    }
}
