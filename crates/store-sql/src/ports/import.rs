use std::collections::HashMap;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use gatehouse_domain::import::{ImportStore, ImportedUser, SkipReason, Written};
use gatehouse_domain::PortError;
use time::OffsetDateTime;

use crate::dialect::{advance_user_ids, insert_rows, run, Db, KeepPreparedDsl, StoreError};
use crate::schema::{django_imports, groups, profiles, user_groups, users};
use crate::sql_types::Utc;
use crate::{Connections, SqlStore};

/// An account holding an imported user's id or address: its id, address key
/// and hash, and whether an earlier run made it, with the hash that run wrote.
type Holder = (i64, String, Option<String>, Option<i64>, Option<String>);

/// A batch is a handful of statements whatever its size (one per table, and
/// one update per account imported before), not a few per user.
#[async_trait]
impl<C: Connections> ImportStore for SqlStore<C> {
    async fn import_batch(
        &self,
        batch: &[ImportedUser],
        group_names: &[String],
        now: OffsetDateTime,
        dry_run: bool,
    ) -> Result<Vec<Written>, PortError> {
        let outcome = self
            .write(async move |tx| {
                let group_ids = &ensure_groups(tx, batch, group_names).await?;
                let written = write_users(tx, batch, now).await?;
                let kept: Vec<(&ImportedUser, &Written)> =
                    batch.iter().zip(&written).filter(|(_, w)| !matches!(w, Written::Skipped(_))).collect();
                let ids: Vec<i64> = kept.iter().map(|(user, _)| user.id.get()).collect();
                // Profiles and memberships are replaced whole.
                run!(tx, |c| diesel::delete(profiles::table.filter(profiles::user_id.eq_any(&ids))).execute(c))?;
                run!(tx, |c| diesel::delete(user_groups::table.filter(user_groups::user_id.eq_any(&ids))).execute(c))?;
                let profile_rows: Vec<_> = kept
                    .iter()
                    .map(|(user, _)| {
                        let profile = user.profile.clone().unwrap_or_default();
                        (
                            profiles::user_id.eq(user.id.get()),
                            profiles::phone.eq(profile.phone),
                            profiles::gender.eq(profile.gender),
                            profiles::bio.eq(profile.bio),
                        )
                    })
                    .collect();
                let memberships: Vec<_> = kept
                    .iter()
                    .flat_map(|(user, _)| {
                        let id = user.id.get();
                        user.groups.iter().filter_map(move |name| {
                            group_ids
                                .get(name)
                                .map(|group| (user_groups::user_id.eq(id), user_groups::group_id.eq(*group)))
                        })
                    })
                    .collect();
                if !ids.is_empty() {
                    insert_rows!(tx, profiles::table, &profile_rows)?;
                    insert_rows!(tx, user_groups::table, &memberships)?;
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

/// Creates the groups named (by the source, and by any user) that do not
/// exist yet; answers every one's id.
async fn ensure_groups(
    db: &mut Db<'_>,
    batch: &[ImportedUser],
    group_names: &[String],
) -> Result<HashMap<String, i64>, StoreError> {
    let mut names: Vec<&str> = batch.iter().flat_map(|u| &u.groups).chain(group_names).map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let existing: Vec<String> =
        run!(db, |c| groups::table.filter(groups::name.eq_any(&names)).select(groups::name).load(c))?;
    let missing: Vec<_> =
        names.iter().filter(|name| !existing.iter().any(|e| e == *name)).map(|name| groups::name.eq(*name)).collect();
    if !missing.is_empty() {
        insert_rows!(db, groups::table, &missing)?;
    }
    let found: Vec<(String, i64)> =
        run!(db, |c| groups::table.filter(groups::name.eq_any(&names)).select((groups::name, groups::id)).load(c))?;
    Ok(found.into_iter().collect())
}

/// Adds the new accounts and refreshes those an earlier run made; an id or
/// address held by another account is a skip.
async fn write_users(db: &mut Db<'_>, batch: &[ImportedUser], now: OffsetDateTime) -> Result<Vec<Written>, StoreError> {
    let ids: Vec<i64> = batch.iter().map(|u| u.id.get()).collect();
    let keys: Vec<String> = batch.iter().map(|u| u.email.key().as_str().to_owned()).collect();
    let holders: Vec<Holder> = run!(db, |c| users::table
        .left_join(django_imports::table)
        .filter(users::id.eq_any(&ids).or(users::email_key.eq_any(&keys)))
        .select((
            users::id,
            users::email_key,
            users::password_hash,
            django_imports::user_id.nullable(),
            django_imports::password_hash.nullable(),
        ))
        .load(c))?;
    let by_id: HashMap<i64, &Holder> = holders.iter().map(|h| (h.0, h)).collect();
    let by_key: HashMap<&str, i64> = holders.iter().map(|h| (h.1.as_str(), h.0)).collect();
    let (mut written, mut new_users, mut imports) = (Vec::new(), Vec::new(), Vec::new());
    for (user, key) in batch.iter().zip(&keys) {
        let id = user.id.get();
        let hash = user.password_hash.as_ref().map(|h| h.expose().to_owned());
        let same = by_id.get(&id);
        let outcome = if same.is_some_and(|h| h.3.is_none()) {
            Written::Skipped(SkipReason::IdTaken)
        } else if by_key.get(key.as_str()).is_some_and(|holder| *holder != id) {
            Written::Skipped(SkipReason::EmailTaken)
        } else {
            let flags = (
                users::first_name.eq(user.first_name.clone()),
                users::last_name.eq(user.last_name.clone()),
                users::is_active.eq(user.is_active),
                users::is_staff.eq(user.is_staff),
                users::is_superuser.eq(user.is_superuser),
                users::is_verified.eq(user.is_verified),
            );
            match same {
                None => {
                    let row = (
                        users::id.eq(id),
                        users::email.eq(user.email.as_ref().to_owned()),
                        users::email_key.eq(key.clone()),
                        users::password_hash.eq(hash.clone()),
                        users::date_joined.eq(Utc(user.date_joined)),
                        users::last_login.eq(user.last_login.map(Utc)),
                    );
                    new_users.push((row, flags));
                    imports.push((id, hash));
                    Written::Added
                }
                Some((_, _, stored, _, imported)) => {
                    // A password changed (or rehashed at login) in Gatehouse since stays.
                    let password_kept = stored != imported;
                    let password = if password_kept { imported.clone() } else { hash };
                    let set_password = (!password_kept).then(|| users::password_hash.eq(password.clone()));
                    run!(db, |c| diesel::update(users::table.find(id))
                        .set((flags, set_password))
                        .keep_prepared()
                        .execute(c))?;
                    imports.push((id, password));
                    Written::Updated { password_kept }
                }
            }
        };
        written.push(outcome);
    }
    if !new_users.is_empty() {
        insert_rows!(db, users::table, &new_users)?;
    }
    let imported: Vec<i64> = imports.iter().map(|(id, _)| *id).collect();
    run!(db, |c| diesel::delete(django_imports::table.filter(django_imports::user_id.eq_any(&imported))).execute(c))?;
    let rows: Vec<_> = imports
        .into_iter()
        .map(|(id, hash)| {
            (
                django_imports::user_id.eq(id),
                django_imports::password_hash.eq(hash),
                django_imports::imported_at.eq(Utc(now)),
            )
        })
        .collect();
    if !rows.is_empty() {
        insert_rows!(db, django_imports::table, &rows)?;
    }
    Ok(written)
}
