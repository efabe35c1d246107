use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use gatehouse_domain::admin::{Grants, Group, Permission, UserPage, UserQuery};
use gatehouse_domain::mail::OutgoingMail;
use gatehouse_domain::ports::{
    AdminNewUser, AdminStore, AdminUserChanges, AdminWrite, AdminWrites, GroupWrite, NewOneTimeToken,
};
use gatehouse_domain::{PasswordHash, PortError, UserId};
use time::OffsetDateTime;

use crate::dialect::{run, run_optional, AsDb, Db, KeepPreparedDsl, StoreError};
use crate::queries::{
    filtered_users, insert_mails, insert_token, insert_user, is_last_superuser, join_groups, load_user, ordered_users,
    patch_profile, require_user, revoke_user_sessions, set_permissions, with_permissions,
};
use crate::rows::{to_user, NewUserRow, ProfileRow, UserRow};
use crate::schema::{group_permissions, groups, profiles, user_groups, users};
use crate::sql_types::Utc;
use crate::{Connections, SqlStore};

// Used by `filtered_users!`, which expands here.
diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

#[async_trait]
impl<C: Connections> AdminStore for SqlStore<C> {
    async fn grants_of(&self, id: UserId) -> Result<Option<Grants>, PortError> {
        let mut conn = self.conn().await?;
        let flags = run_optional!(&mut conn, |c| users::table
            .find(id.get())
            .select((users::is_active, users::is_superuser))
            .first::<(bool, bool)>(c))?;
        let Some((is_active, is_superuser)) = flags else { return Ok(None) };
        let names = run!(&mut conn, |c| user_groups::table
            .inner_join(group_permissions::table.on(group_permissions::group_id.eq(user_groups::group_id)))
            .filter(user_groups::user_id.eq(id.get()))
            .select(group_permissions::permission)
            .load::<String>(c))?;
        let permissions = names.iter().filter_map(|n| Permission::parse(n)).collect();
        Ok(Some(Grants { is_active, is_superuser, permissions }))
    }

    async fn list_users(&self, query: &UserQuery) -> Result<UserPage, PortError> {
        let mut conn = self.conn().await?;
        let count = run!(&mut conn, |c| filtered_users!(query).count().get_result::<i64>(c))?;
        let ids = run!(&mut conn, |c| ordered_users!(filtered_users!(query), query.ordering)
            .select(users::id)
            .limit(i64::from(query.page_size))
            .offset(query.offset())
            .load::<i64>(c))?;
        let db = &mut conn.as_db();
        let rows = run!(db, |c| users::table
            .left_join(profiles::table)
            .filter(users::id.eq_any(&ids))
            .select((UserRow::as_select(), Option::<ProfileRow>::as_select()))
            .load::<(UserRow, Option<ProfileRow>)>(c))?;
        let memberships = run!(db, |c| user_groups::table
            .inner_join(groups::table)
            .filter(user_groups::user_id.eq_any(&ids))
            .select((user_groups::user_id, groups::name))
            .order(groups::name)
            .load::<(i64, String)>(c))?;
        let mut users: Vec<_> = rows
            .into_iter()
            .map(|(user, profile)| {
                let id = user.id;
                let groups = memberships.iter().filter(|(m, _)| *m == id).map(|(_, name)| name.clone()).collect();
                to_user(user, profile, groups)
            })
            .collect();
        users.sort_by_key(|user| ids.iter().position(|id| *id == user.id.get()));
        Ok(UserPage { count, results: users })
    }

    async fn list_groups(&self) -> Result<Vec<Group>, PortError> {
        let mut conn = self.conn().await?;
        let found = run!(&mut conn, |c| groups::table.order(groups::name).load::<(i64, String)>(c))?;
        Ok(with_permissions(&mut conn.as_db(), found).await?)
    }

    async fn get_group(&self, id: i64) -> Result<Option<Group>, PortError> {
        Ok(group(&mut self.conn().await?.as_db(), id).await?)
    }
}

async fn group(db: &mut Db<'_>, id: i64) -> Result<Option<Group>, StoreError> {
    let found = run!(db, |c| groups::table.find(id).load::<(i64, String)>(c))?;
    Ok(with_permissions(db, found).await?.pop())
}

#[async_trait]
impl<C: Connections> AdminWrites for SqlStore<C> {
    async fn groups_named(&self, names: &[String]) -> Result<Vec<Group>, PortError> {
        let mut conn = self.conn().await?;
        let found =
            run!(&mut conn, |c| groups::table
                .filter(groups::name.eq_any(names))
                .order(groups::name)
                .load::<(i64, String)>(c))?;
        Ok(with_permissions(&mut conn.as_db(), found).await?)
    }

    async fn admin_create_user(
        &self,
        user: AdminNewUser,
        invitation: Option<(NewOneTimeToken, OutgoingMail)>,
    ) -> Result<AdminWrite, PortError> {
        let outcome: Result<_, StoreError> = self
            .write(async move |tx| {
                let key = user.email.key();
                let row = NewUserRow {
                    email: user.email.as_ref(),
                    email_key: key.as_str(),
                    password_hash: user.password_hash.as_ref().map(PasswordHash::expose),
                    first_name: &user.first_name,
                    last_name: &user.last_name,
                    is_active: user.is_active,
                    is_staff: user.is_staff,
                    is_verified: user.is_verified,
                    date_joined: Utc(user.date_joined),
                };
                let groups: Vec<&str> = user.groups.iter().map(String::as_str).collect();
                let id = insert_user(tx, &row, &groups).await?;
                if let Some((token, mail)) = &invitation {
                    insert_token(tx, id, token).await?;
                    insert_mails(tx, std::slice::from_ref(mail), user.date_joined).await?;
                }
                Ok(AdminWrite::Done(Some(Box::new(require_user(tx, id).await?))))
            })
            .await;
        match outcome {
            Err(StoreError::EmailTaken) => Ok(AdminWrite::EmailTaken),
            other => other.map_err(Into::into),
        }
    }

    async fn admin_update_user(
        &self,
        id: UserId,
        changes: AdminUserChanges,
        now: OffsetDateTime,
    ) -> Result<AdminWrite, PortError> {
        let outcome: Result<_, StoreError> = self
            .write(async move |tx| {
                let demotes = changes.is_superuser == Some(false) || changes.is_active == Some(false);
                if demotes && is_last_superuser(tx, id.get()).await? {
                    return Ok(AdminWrite::LastSuperuser);
                }
                let found = run!(tx, |c| diesel::update(users::table.find(id.get()))
                    .set((
                        users::id.eq(users::id),
                        changes.email.as_ref().map(|e| users::email.eq(e.as_ref().to_owned())),
                        changes.email.as_ref().map(|e| users::email_key.eq(e.key().as_str().to_owned())),
                        changes.profile.first_name.as_ref().map(|n| users::first_name.eq(n)),
                        changes.profile.last_name.as_ref().map(|n| users::last_name.eq(n)),
                        changes.is_active.map(|v| users::is_active.eq(v)),
                        changes.is_staff.map(|v| users::is_staff.eq(v)),
                        changes.is_superuser.map(|v| users::is_superuser.eq(v)),
                        changes.is_verified.map(|v| users::is_verified.eq(v)),
                    ))
                    .keep_prepared()
                    .execute(c))
                .map_err(StoreError::on_email)?;
                if found == 0 {
                    return Ok(AdminWrite::NotFound);
                }
                patch_profile(tx, id.get(), &changes.profile).await?;
                if let Some(groups) = &changes.groups {
                    run!(tx, |c| diesel::delete(user_groups::table.filter(user_groups::user_id.eq(id.get())))
                        .execute(c))?;
                    let names: Vec<&str> = groups.iter().map(String::as_str).collect();
                    join_groups(tx, id.get(), &names).await?;
                }
                if changes.is_active == Some(false) {
                    revoke_user_sessions(tx, id.get(), None, now).await?;
                }
                Ok(AdminWrite::Done(load_user(tx, id.get()).await?.map(Box::new)))
            })
            .await;
        match outcome {
            Err(StoreError::EmailTaken) => Ok(AdminWrite::EmailTaken),
            other => other.map_err(Into::into),
        }
    }

    async fn admin_delete_user(&self, id: UserId) -> Result<AdminWrite, PortError> {
        self.write(async move |tx| {
            if is_last_superuser(tx, id.get()).await? {
                return Ok(AdminWrite::LastSuperuser);
            }
            let deleted = run!(tx, |c| diesel::delete(users::table.find(id.get())).execute(c))?;
            Ok(if deleted == 0 { AdminWrite::NotFound } else { AdminWrite::Done(None) })
        })
        .await
    }

    async fn create_group(&self, name: &str, permissions: &[Permission]) -> Result<Option<Group>, PortError> {
        let (name, permissions) = (name.to_owned(), permissions.to_vec());
        self.write(async move |tx| {
            let id = run_optional!(tx, |c| diesel::insert_into(groups::table)
                .values(groups::name.eq(&name))
                .on_conflict(groups::name)
                .do_nothing()
                .returning(groups::id)
                .get_result::<i64>(c))?;
            let Some(id) = id else { return Ok(None) };
            set_permissions(tx, id, &permissions).await?;
            Ok(with_permissions(tx, vec![(id, name)]).await?.pop())
        })
        .await
    }

    async fn update_group(
        &self,
        id: i64,
        name: Option<String>,
        permissions: Option<Vec<Permission>>,
    ) -> Result<GroupWrite, PortError> {
        self.write(async move |tx| {
            if let Some(name) = &name {
                let taken = run_optional!(tx, |c| groups::table
                    .filter(groups::name.eq(name))
                    .filter(groups::id.ne(id))
                    .select(groups::id)
                    .first::<i64>(c))?;
                if taken.is_some() {
                    return Ok(GroupWrite::NameTaken);
                }
                run!(tx, |c| diesel::update(groups::table.find(id))
                    .set(groups::name.eq(name))
                    .keep_prepared()
                    .execute(c))?;
            }
            if let Some(permissions) = &permissions {
                set_permissions(tx, id, permissions).await?;
            }
            Ok(group(tx, id).await?.map_or(GroupWrite::NotFound, GroupWrite::Done))
        })
        .await
    }

    async fn delete_group(&self, id: i64) -> Result<bool, PortError> {
        let deleted = run!(&mut self.conn().await?, |c| diesel::delete(groups::table.find(id)).execute(c))?;
        Ok(deleted > 0)
    }
}
