use async_trait::async_trait;
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;
use gatehouse_domain::import::{ImportStore, ImportedUser, SkipReason, Written};
use gatehouse_domain::PortError;
use time::OffsetDateTime;

use crate::dialect::{advance_user_ids, run, Db, StoreError};
use crate::queries::join_groups;
use crate::schema::{django_imports, profiles, user_groups, users};
use crate::sql_types::Utc;
use crate::{Connections, SqlStore};

#[async_trait]
impl<C: Connections> ImportStore for SqlStore<C> {
    async fn import_batch(
        &self,
        batch: &[ImportedUser],
        groups: &[String],
        now: OffsetDateTime,
        dry_run: bool,
    ) -> Result<Vec<Written>, PortError> {
        let outcome = self
            .write(async move |tx| {
                let mut names: Vec<&str> =
                    batch.iter().flat_map(|u| u.groups.iter()).chain(groups).map(String::as_str).collect();
                names.sort_unstable();
                names.dedup();
                for name in names {
                    run!(tx, |c| diesel::insert_into(crate::schema::groups::table)
                        .values(crate::schema::groups::name.eq(name))
                        .on_conflict_do_nothing()
                        .execute(c))?;
                }
                let mut written = Vec::with_capacity(batch.len());
                for user in batch {
                    written.push(import_user(tx, user, now).await?);
                }
                advance_user_ids(tx).await?;
                match dry_run {
                    true => Err(StoreError::DryRun(written)),
                    false => Ok(written),
                }
            })
            .await;
        match outcome {
            Err(StoreError::DryRun(written)) => Ok(written),
            other => Ok(other?),
        }
    }
}

/// An account holding an imported user's id or address: its id and hash,
/// and whether an earlier run made it, with the hash that run wrote.
type Holder = (i64, Option<String>, Option<i64>, Option<String>);

/// Adds the account, or refreshes the one an earlier run made.
async fn import_user(db: &mut Db<'_>, user: &ImportedUser, now: OffsetDateTime) -> Result<Written, StoreError> {
    let (id, key) = (user.id.get(), user.email.key());
    // The accounts holding the id or the address, and what an earlier run wrote to them.
    let holders: Vec<Holder> = run!(db, |c| users::table
        .left_join(django_imports::table)
        .filter(users::id.eq(id).or(users::email_key.eq(key.as_str())))
        .select((
            users::id,
            users::password_hash,
            django_imports::user_id.nullable(),
            django_imports::password_hash.nullable()
        ))
        .load(c))?;
    let same = holders.iter().find(|h| h.0 == id);
    if same.is_some_and(|h| h.2.is_none()) {
        return Ok(Written::Skipped(SkipReason::IdTaken));
    }
    if holders.iter().any(|h| h.0 != id) {
        return Ok(Written::Skipped(SkipReason::EmailTaken));
    }
    let hash = user.password_hash.as_ref().map(|h| h.expose());
    let flags = (
        users::first_name.eq(&user.first_name),
        users::last_name.eq(&user.last_name),
        users::is_active.eq(user.is_active),
        users::is_staff.eq(user.is_staff),
        users::is_superuser.eq(user.is_superuser),
        users::is_verified.eq(user.is_verified),
    );
    let written = match same {
        None => {
            let row = (
                users::id.eq(id),
                users::email.eq(user.email.as_ref()),
                users::email_key.eq(key.as_str()),
                users::password_hash.eq(hash),
                users::date_joined.eq(Utc(user.date_joined)),
                users::last_login.eq(user.last_login.map(Utc)),
            );
            run!(db, |c| diesel::insert_into(users::table).values((row, flags)).execute(c))?;
            Written::Added
        }
        Some((_, stored, _, imported)) => {
            run!(db, |c| diesel::update(users::table.find(id)).set(flags).execute(c))?;
            let password_kept = stored != imported;
            if !password_kept {
                run!(db, |c| diesel::update(users::table.find(id)).set(users::password_hash.eq(hash)).execute(c))?;
            }
            Written::Updated { password_kept }
        }
    };
    // The hash this run wrote, or the one an earlier run wrote and Gatehouse since replaced.
    let imported_hash = match same {
        Some((_, _, _, imported)) if written == (Written::Updated { password_kept: true }) => imported.as_deref(),
        _ => hash,
    };
    run!(db, |c| diesel::insert_into(django_imports::table)
        .values((
            django_imports::user_id.eq(id),
            django_imports::password_hash.eq(imported_hash),
            django_imports::imported_at.eq(Utc(now)),
        ))
        .on_conflict(django_imports::user_id)
        .do_update()
        .set((
            django_imports::password_hash.eq(excluded(django_imports::password_hash)),
            django_imports::imported_at.eq(excluded(django_imports::imported_at)),
        ))
        .execute(c))?;
    let profile = user.profile.clone().unwrap_or_default();
    run!(db, |c| diesel::insert_into(profiles::table)
        .values((
            profiles::user_id.eq(id),
            profiles::phone.eq(&profile.phone),
            profiles::gender.eq(&profile.gender),
            profiles::bio.eq(&profile.bio),
        ))
        .on_conflict(profiles::user_id)
        .do_update()
        .set((
            profiles::phone.eq(excluded(profiles::phone)),
            profiles::gender.eq(excluded(profiles::gender)),
            profiles::bio.eq(excluded(profiles::bio)),
        ))
        .execute(c))?;
    run!(db, |c| diesel::delete(user_groups::table.filter(user_groups::user_id.eq(id))).execute(c))?;
    let names: Vec<&str> = user.groups.iter().map(String::as_str).collect();
    join_groups(db, id, &names).await?;
    Ok(written)
}
