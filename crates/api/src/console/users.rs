//! The users pages: the list with its search, filters, ordering and pages;
//! one user, with the edit form, the session and two-factor actions and
//! deletion after a confirmation; and the form that creates a user.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use gatehouse_domain::admin::{AdminError, Group, Permission, RawUserQuery, UserPage, UserQuery};
use gatehouse_domain::user::User;
use maud::{html, Markup};
use secrecy::SecretString;

use super::form::Form;
use super::pages::{
    checkbox, confirm_delete, csrf, done_notice, frame, input, messages, moment, pager, select, summary, yes_no, Input,
    Problems, Section, NO_PROBLEMS,
};
use super::{html, or_missing, see_other, ConsoleError, ConsoleForm, Operator};
use crate::extract::Client;
use crate::routes::account::ProfileFields;
use crate::routes::admin::{AdminCreateBody, AdminUpdateBody};
use crate::state::AppState;

const FLAG_CHOICES: [(&str, &str); 3] = [("", "Any"), ("true", "Yes"), ("false", "No")];

const ORDERINGS: [(&str, &str); 6] = [
    ("", "Newest first"),
    ("date_joined", "Oldest first"),
    ("email", "Email, A to Z"),
    ("-email", "Email, Z to A"),
    ("-last_login", "Latest login first"),
    ("last_login", "Earliest login first"),
];

/// The list's query parameters, the API's own.
const LIST_PARAMETERS: [&str; 7] = ["search", "is_active", "is_verified", "is_staff", "ordering", "page", "page_size"];

fn user_path(id: impl std::fmt::Display) -> String {
    format!("/admin/users/{id}")
}

pub(super) async fn list(
    state: web::Data<AppState>,
    operator: Operator,
    req: HttpRequest,
) -> Result<HttpResponse, ConsoleError> {
    let query = Form::parse(req.query_string().as_bytes());
    let raw = RawUserQuery {
        search: query.value("search"),
        is_active: query.value("is_active"),
        is_verified: query.value("is_verified"),
        is_staff: query.value("is_staff"),
        ordering: query.value("ordering"),
        page: query.value("page"),
        page_size: query.value("page_size"),
    };
    match state.admin.list_users(operator.principal, raw).await {
        Ok(found) => Ok(html(StatusCode::OK, list_page(&operator, &query, Some(&found), &NO_PROBLEMS))),
        Err(AdminError::Invalid(errors)) => {
            Ok(html(StatusCode::BAD_REQUEST, list_page(&operator, &query, None, &errors.into_map())))
        }
        Err(other) => Err(other.into()),
    }
}

fn list_page(operator: &Operator, query: &Form, found: Option<&(UserQuery, UserPage)>, problems: &Problems) -> Markup {
    let given = |name: &str| query.text(name).unwrap_or_default();
    let content = html! {
        @if let Some(notice) = done_notice(query) { p.notice role="status" { (notice) } }
        @if operator.may(Permission::UsersAdd) { p { a.button href="/admin/users/new" { "Add a user" } } }
        (summary(problems))
        form.filters.card method="get" action="/admin/users" role="search" {
            (input(&Input { label: "Search", name: "search", kind: "search", value: given("search"),
                hint: Some("Part of an email address or a name"), ..Input::default() }, problems))
            (select("Active", "is_active", &FLAG_CHOICES, given("is_active"), problems))
            (select("Verified", "is_verified", &FLAG_CHOICES, given("is_verified"), problems))
            (select("Staff", "is_staff", &FLAG_CHOICES, given("is_staff"), problems))
            (select("Order", "ordering", &ORDERINGS, given("ordering"), problems))
            @if let Some(size) = query.value("page_size") { input type="hidden" name="page_size" value=(size); }
            button type="submit" { "Show" }
        }
        (messages(problems, "page"))
        (messages(problems, "page_size"))
        @if let Some((list, page)) = found {
            @if page.results.is_empty() {
                p { "No user matches." }
            } @else {
                div.table {
                    table {
                        thead { tr {
                            th scope="col" { "Email" } th scope="col" { "Name" } th scope="col" { "Active" }
                            th.hide-narrow scope="col" { "Verified" } th.hide-narrow scope="col" { "Staff" }
                            th.hide-narrow scope="col" { "Joined" } th.hide-narrow scope="col" { "Last login" }
                        } }
                        tbody {
                            @for user in &page.results {
                                tr {
                                    td { a href=(user_path(user.id)) { (user.email.as_ref()) } }
                                    td { (user.first_name) " " (user.last_name) }
                                    td { (yes_no(user.is_active)) }
                                    td.hide-narrow { (yes_no(user.is_verified)) }
                                    td.hide-narrow { (yes_no(user.is_staff)) }
                                    td.hide-narrow { (moment(user.date_joined)) }
                                    td.hide-narrow { @if let Some(at) = user.last_login { (moment(at)) } @else { "Never" } }
                                }
                            }
                        }
                    }
                }
            }
            @let kept: Vec<(&str, &str)> = LIST_PARAMETERS.iter().map(|name| (*name, given(name))).collect();
            (pager("/admin/users", &kept, list.page, list.page_size, page.count))
        }
    };
    frame("Users", Some(operator), Section::Users, content)
}

/// A user's editable fields, as the form shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UserFields {
    email: String,
    first_name: String,
    last_name: String,
    phone: String,
    gender: String,
    bio: String,
    is_active: bool,
    is_staff: bool,
    is_superuser: bool,
    is_verified: bool,
    /// Sorted, so that two sets compare equal.
    groups: Vec<String>,
}

impl UserFields {
    fn of(user: &User) -> Self {
        let mut groups = user.groups.clone();
        groups.sort();
        Self {
            email: user.email.as_ref().to_owned(),
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            phone: user.profile.phone.clone().unwrap_or_default(),
            gender: user.profile.gender.clone().unwrap_or_default(),
            bio: user.profile.bio.clone(),
            is_active: user.is_active,
            is_staff: user.is_staff,
            is_superuser: user.is_superuser,
            is_verified: user.is_verified,
            groups,
        }
    }

    /// What the form says, for what the operator may change there; the rest
    /// as it is (a superuser flag only a superuser sets, groups one must see to choose).
    fn posted(form: &Form, current: &Self, operator: &Operator, choosing_groups: bool) -> Self {
        let text = |name: &str| form.text(name).unwrap_or_default().to_owned();
        let mut groups = if choosing_groups { form.all("groups") } else { current.groups.clone() };
        groups.sort();
        Self {
            email: text("email"),
            first_name: text("first_name"),
            last_name: text("last_name"),
            phone: text("profile.phone"),
            gender: text("profile.gender"),
            bio: text("profile.bio"),
            is_active: form.checked("is_active"),
            is_staff: form.checked("is_staff"),
            is_superuser: if operator.grants.is_superuser {
                form.checked("is_superuser")
            } else {
                current.is_superuser
            },
            is_verified: form.checked("is_verified"),
            groups,
        }
    }

    /// The API's update body with only what differs from `current`, so the
    /// audit trail records what was changed and nothing else.
    fn changes_from(&self, current: &Self) -> AdminUpdateBody {
        let changed = |new: &String, old: &String| (new != old).then(|| new.clone());
        // An empty optional field clears it.
        let cleared = |new: &String, old: &String| (new != old).then(|| Some(new.clone()).filter(|v| !v.is_empty()));
        let profile_changed = self.phone != current.phone || self.gender != current.gender || self.bio != current.bio;
        let flag = |new: bool, old: bool| (new != old).then_some(new);
        AdminUpdateBody {
            email: changed(&self.email, &current.email),
            first_name: changed(&self.first_name, &current.first_name),
            last_name: changed(&self.last_name, &current.last_name),
            profile: profile_changed.then(|| ProfileFields {
                phone: cleared(&self.phone, &current.phone),
                gender: cleared(&self.gender, &current.gender),
                bio: changed(&self.bio, &current.bio),
            }),
            is_active: flag(self.is_active, current.is_active),
            is_staff: flag(self.is_staff, current.is_staff),
            is_superuser: flag(self.is_superuser, current.is_superuser),
            is_verified: flag(self.is_verified, current.is_verified),
            groups: (self.groups != current.groups).then(|| self.groups.clone()),
        }
    }
}

/// Every group, when the operator may see them: a user's groups are chosen from these.
async fn group_choices(state: &AppState, operator: &Operator) -> Result<Option<Vec<Group>>, ConsoleError> {
    if !operator.may(Permission::GroupsView) {
        return Ok(None);
    }
    Ok(Some(state.admin.list_groups(operator.principal).await?))
}

pub(super) async fn show(
    state: web::Data<AppState>,
    operator: Operator,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ConsoleError> {
    let user = state.admin.get_user(operator.principal, &id).await.map_err(or_missing("user"))?;
    let groups = group_choices(&state, &operator).await?;
    let notice = done_notice(&Form::parse(req.query_string().as_bytes()));
    let page = UserPageParts { user: &user, fields: &UserFields::of(&user), groups: groups.as_deref(), notice };
    Ok(html(StatusCode::OK, user_page(&operator, &page, &NO_PROBLEMS)))
}

pub(super) async fn update(
    state: web::Data<AppState>,
    client: Client,
    id: web::Path<String>,
    ConsoleForm(operator, form): ConsoleForm,
) -> Result<HttpResponse, ConsoleError> {
    operator.require(Permission::UsersChange)?;
    let user = state.admin.get_user(operator.principal, &id).await.map_err(or_missing("user"))?;
    let groups = group_choices(&state, &operator).await?;
    let current = UserFields::of(&user);
    let posted = UserFields::posted(&form, &current, &operator, groups.is_some());
    if posted == current {
        return Ok(see_other(&format!("{}?done=unchanged", user_path(user.id))));
    }
    let result = match posted.changes_from(&current).into_changes() {
        Ok(changes) => state.admin.update_user(operator.principal, &id, changes, &client.0).await,
        Err(errors) => Err(AdminError::Invalid(errors)),
    };
    match result {
        Ok(user) => Ok(see_other(&format!("{}?done=saved", user_path(user.id)))),
        Err(AdminError::Invalid(errors)) => {
            let page = UserPageParts { user: &user, fields: &posted, groups: groups.as_deref(), notice: None };
            Ok(html(StatusCode::BAD_REQUEST, user_page(&operator, &page, &errors.into_map())))
        }
        Err(other) => Err(or_missing("user")(other)),
    }
}

/// What a user's page shows: the user as stored, the form's values (the
/// stored ones, or those just posted), the groups to choose from.
#[derive(Debug)]
struct UserPageParts<'a> {
    user: &'a User,
    fields: &'a UserFields,
    groups: Option<&'a [Group]>,
    notice: Option<&'static str>,
}

fn user_page(operator: &Operator, page: &UserPageParts<'_>, problems: &Problems) -> Markup {
    let UserPageParts { user, fields, groups, notice } = page;
    let path = user_path(user.id);
    let content = html! {
        @if let Some(notice) = notice { p.notice role="status" { (notice) } }
        div.card {
            dl.facts {
                dt { "Id" } dd { (user.id) }
                dt { "Email" } dd { (user.email.as_ref()) }
                dt { "Name" } dd { (user.first_name) " " (user.last_name) }
                dt { "Active" } dd { (yes_no(user.is_active)) }
                dt { "Verified" } dd { (yes_no(user.is_verified)) }
                dt { "Staff" } dd { (yes_no(user.is_staff)) }
                dt { "Superuser" } dd { (yes_no(user.is_superuser)) }
                dt { "Two-factor" } dd { (yes_no(user.mfa_enabled)) }
                dt { "Groups" } dd { (user.groups.join(", ")) }
                dt { "Phone" } dd { (user.profile.phone.as_deref().unwrap_or("—")) }
                dt { "Gender" } dd { (user.profile.gender.as_deref().unwrap_or("—")) }
                dt { "Bio" } dd { (user.profile.bio) }
                dt { "Joined" } dd { (moment(user.date_joined)) }
                dt { "Last login" } dd { @if let Some(at) = user.last_login { (moment(at)) } @else { "Never" } }
            }
            @if operator.may(Permission::AuditView) {
                p { a href=(format!("/admin/audit?user={}", user.id)) { "What happened to this account" } }
            }
        }
        @if operator.may(Permission::UsersChange) {
            form.card method="post" action=(path) {
                h2 { "Change" }
                (csrf(operator))
                (summary(problems))
                (input(&Input { label: "Email", name: "email", kind: "email", value: &fields.email, required: true, ..Input::default() }, problems))
                (input(&Input { label: "First name", name: "first_name", value: &fields.first_name, ..Input::default() }, problems))
                (input(&Input { label: "Last name", name: "last_name", value: &fields.last_name, ..Input::default() }, problems))
                fieldset {
                    legend { "Status" }
                    (checkbox("Active: may sign in", "is_active", "on", fields.is_active, false))
                    (checkbox("Verified email address", "is_verified", "on", fields.is_verified, false))
                    (checkbox("Staff", "is_staff", "on", fields.is_staff, false))
                    (checkbox("Superuser: holds every permission", "is_superuser", "on", fields.is_superuser, !operator.grants.is_superuser))
                    @if !operator.grants.is_superuser { div.hint { "Only a superuser makes or unmakes superusers." } }
                    @for field in ["is_active", "is_verified", "is_staff", "is_superuser"] { (messages(problems, field)) }
                }
                @if let Some(groups) = groups {
                    (group_boxes(groups, &fields.groups, problems))
                }
                fieldset {
                    legend { "Profile" }
                    (input(&Input { label: "Phone", name: "profile.phone", kind: "tel", value: &fields.phone,
                        hint: Some("E.164: + and 8 to 15 digits; empty to remove"), ..Input::default() }, problems))
                    (input(&Input { label: "Gender", name: "profile.gender", value: &fields.gender, ..Input::default() }, problems))
                    div.field.invalid[problems.contains_key("profile.bio")] {
                        label for="profile.bio" { "Bio" }
                        textarea id="profile.bio" name="profile.bio" { (fields.bio) }
                        (messages(problems, "profile.bio"))
                    }
                }
                button type="submit" { "Save" }
            }
            div.card {
                h2 { "Sessions and sign-in" }
                div.actions {
                    form method="post" action=(format!("{path}/sessions/revoke")) {
                        (csrf(operator))
                        button.quiet type="submit" { "End every session" }
                    }
                    @if user.mfa_enabled {
                        form method="post" action=(format!("{path}/mfa/reset")) {
                            (csrf(operator))
                            button.quiet type="submit" { "Turn off two-factor authentication" }
                        }
                    }
                }
            }
        }
        @if operator.may(Permission::UsersDelete) {
            p { a.button.quiet href=(format!("{path}/delete")) { "Delete this user…" } }
        }
    };
    frame(user.email.as_ref(), Some(operator), Section::Users, content)
}

fn group_boxes(groups: &[Group], chosen: &[String], problems: &Problems) -> Markup {
    html! {
        fieldset.invalid[problems.contains_key("groups")] {
            legend { "Groups" }
            @for group in groups {
                (checkbox(&group.name, "groups", &group.name, chosen.contains(&group.name), false))
            }
            (messages(problems, "groups"))
        }
    }
}

pub(super) async fn revoke_sessions(
    state: web::Data<AppState>,
    client: Client,
    id: web::Path<String>,
    ConsoleForm(operator, _): ConsoleForm,
) -> Result<HttpResponse, ConsoleError> {
    state.admin.revoke_sessions(operator.principal, &id, &client.0).await.map_err(or_missing("user"))?;
    Ok(see_other(&format!("{}?done=sessions_revoked", user_path(&id))))
}

pub(super) async fn reset_mfa(
    state: web::Data<AppState>,
    client: Client,
    id: web::Path<String>,
    ConsoleForm(operator, _): ConsoleForm,
) -> Result<HttpResponse, ConsoleError> {
    state.admin.reset_mfa(operator.principal, &id, &client.0).await.map_err(or_missing("user"))?;
    Ok(see_other(&format!("{}?done=mfa_reset", user_path(&id))))
}

pub(super) async fn confirm_deletion(
    state: web::Data<AppState>,
    operator: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ConsoleError> {
    operator.require(Permission::UsersDelete)?;
    let user = state.admin.get_user(operator.principal, &id).await.map_err(or_missing("user"))?;
    let consequence = html! {
        "This deletes " strong { (user.email.as_ref()) } ", their sessions and their profile."
    };
    Ok(html(
        StatusCode::OK,
        confirm_delete(&operator, ("Delete this user?", Section::Users), &user_path(user.id), consequence),
    ))
}

pub(super) async fn delete(
    state: web::Data<AppState>,
    client: Client,
    id: web::Path<String>,
    ConsoleForm(operator, _): ConsoleForm,
) -> Result<HttpResponse, ConsoleError> {
    state.admin.delete_user(operator.principal, &id, &client.0).await.map_err(or_missing("user"))?;
    Ok(see_other("/admin/users?done=deleted"))
}

pub(super) async fn new_user(state: web::Data<AppState>, operator: Operator) -> Result<HttpResponse, ConsoleError> {
    operator.require(Permission::UsersAdd)?;
    let groups = group_choices(&state, &operator).await?;
    let blank = Form::parse(b"is_active=on");
    Ok(html(StatusCode::OK, new_user_page(&operator, &blank, groups.as_deref(), &NO_PROBLEMS)))
}

pub(super) async fn create(
    state: web::Data<AppState>,
    client: Client,
    ConsoleForm(operator, form): ConsoleForm,
) -> Result<HttpResponse, ConsoleError> {
    operator.require(Permission::UsersAdd)?;
    let groups = group_choices(&state, &operator).await?;
    let body = AdminCreateBody {
        email: form.text("email").unwrap_or_default().to_owned(),
        password: form.value("password").map(|password| SecretString::from(password.to_owned())),
        first_name: form.text("first_name").map(str::to_owned),
        last_name: form.text("last_name").map(str::to_owned),
        is_active: Some(form.checked("is_active")),
        is_staff: Some(form.checked("is_staff")),
        is_verified: Some(form.checked("is_verified")),
        groups: groups.is_some().then(|| form.all("groups")),
    };
    let result = match body.into_request() {
        Ok(request) => state.admin.create_user(operator.principal, request, &client.0).await,
        Err(errors) => Err(AdminError::Invalid(errors)),
    };
    match result {
        Ok(user) => Ok(see_other(&format!("{}?done=created", user_path(user.id)))),
        Err(AdminError::Invalid(errors)) => {
            Ok(html(StatusCode::BAD_REQUEST, new_user_page(&operator, &form, groups.as_deref(), &errors.into_map())))
        }
        Err(other) => Err(other.into()),
    }
}

/// The creation form, blank or as posted (never the password).
fn new_user_page(operator: &Operator, form: &Form, groups: Option<&[Group]>, problems: &Problems) -> Markup {
    let given = |name: &str| form.text(name).unwrap_or_default();
    let chosen = form.all("groups");
    let content = html! {
        form.card method="post" action="/admin/users/new" {
            (csrf(operator))
            (summary(problems))
            (input(&Input { label: "Email", name: "email", kind: "email", value: given("email"), required: true, ..Input::default() }, problems))
            (input(&Input { label: "First name", name: "first_name", value: given("first_name"), ..Input::default() }, problems))
            (input(&Input { label: "Last name", name: "last_name", value: given("last_name"), ..Input::default() }, problems))
            (input(&Input { label: "Password", name: "password", kind: "password", autocomplete: Some("new-password"),
                hint: Some("Leave it empty to mail the user an invitation to choose one."), ..Input::default() }, problems))
            fieldset {
                legend { "Status" }
                (checkbox("Active: may sign in", "is_active", "on", form.checked("is_active"), false))
                (checkbox("Verified email address", "is_verified", "on", form.checked("is_verified"), false))
                (checkbox("Staff", "is_staff", "on", form.checked("is_staff"), false))
            }
            @if let Some(groups) = groups {
                (group_boxes(groups, &chosen, problems))
                div.hint { "Everyone is in Regular User as well." }
            }
            button type="submit" { "Create" }
        }
    };
    frame("Add a user", Some(operator), Section::Users, content)
}
