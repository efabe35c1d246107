//! The admin API: users and groups, each route behind its permission.

use actix_web::{web, HttpResponse};
use gatehouse_domain::admin::{AdminCreateRequest, Group, RawUserQuery};
use gatehouse_domain::error::{collect, NON_FIELD_ERRORS};
use gatehouse_domain::ports::AdminUserChanges;
use gatehouse_domain::user::{parse_name, ProfilePatch};
use gatehouse_domain::{Email, FieldErrors};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

// The schemas named in the OpenAPI attributes of the handlers below.
use crate::body::{BodyRules, Query};
use crate::error::ApiError;
use crate::extract::{AuthBody, AuthUser, Client};
#[allow(unused_imports)]
use crate::openapi::*;
use crate::routes::account::{parse_profile, ProfileFields};
use crate::state::AppState;
use crate::views::{timestamp, UserView};

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupView {
    id: i64,
    name: String,
    permissions: Vec<&'static str>,
}

impl From<Group> for GroupView {
    fn from(group: Group) -> Self {
        Self { id: group.id, name: group.name, permissions: group.permissions.iter().map(|p| p.as_str()).collect() }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PageView {
    count: i64,
    #[schema(minimum = 1)]
    page: u32,
    #[schema(minimum = 1, maximum = 100)]
    page_size: u32,
    results: Vec<UserView>,
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/users",
    tag = "admin",
    summary = "List users (users.view)",
    params(UserListParams),
    responses((status = 200, description = "A page of users", body = PageView), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 403, description = "Lacks the permission", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn list_users(
    state: web::Data<AppState>,
    caller: AuthUser,
    Query(params): Query<UserListParams>,
) -> Result<HttpResponse, ApiError> {
    let raw = RawUserQuery {
        search: params.search.as_deref(),
        is_active: params.is_active.as_deref(),
        is_verified: params.is_verified.as_deref(),
        is_staff: params.is_staff.as_deref(),
        ordering: params.ordering.as_deref(),
        page: params.page.as_deref(),
        page_size: params.page_size.as_deref(),
    };
    let (query, page) = state.admin.list_users(caller.0, raw).await?;
    Ok(HttpResponse::Ok().json(PageView {
        count: page.count,
        page: query.page,
        page_size: query.page_size,
        results: page.results.into_iter().map(UserView::from).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/users/{id}",
    tag = "admin",
    summary = "Retrieve a user (users.view)",
    params(("id" = String, Path, description = "The numeric id")),
    responses((status = 200, description = "The user", body = UserView), (status = 403, description = "Lacks the permission", body = ErrorResponse), (status = 404, description = "No such item", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn get_user(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user = state.admin.get_user(caller.0, &id).await?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/groups",
    tag = "admin",
    summary = "List groups (groups.view)",
    responses((status = 200, description = "Every group", body = Vec<GroupView>), (status = 403, description = "Lacks the permission", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn list_groups(state: web::Data<AppState>, caller: AuthUser) -> Result<HttpResponse, ApiError> {
    let groups = state.admin.list_groups(caller.0).await?;
    Ok(HttpResponse::Ok().json(groups.into_iter().map(GroupView::from).collect::<Vec<_>>()))
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/groups/{id}",
    tag = "admin",
    summary = "Retrieve a group (groups.view)",
    params(("id" = String, Path, description = "The numeric id")),
    responses((status = 200, description = "The group", body = GroupView), (status = 403, description = "Lacks the permission", body = ErrorResponse), (status = 404, description = "No such item", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn get_group(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let group = state.admin.get_group(caller.0, &id).await?;
    Ok(HttpResponse::Ok().json(GroupView::from(group)))
}

/// Parses an address field, recording its error.
fn parse_email(errors: &mut FieldErrors, raw: Option<String>) -> Option<Email> {
    collect(errors, "email", Email::parse(raw.as_deref().unwrap_or_default()))
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/users",
    tag = "admin",
    summary = "Create a user (users.add); without a password, an invitation is mailed",
    request_body = AdminCreateBody,
    responses((status = 201, description = "Created", body = UserView, links(
        ("GetUser" = (operation_id = "get_user", parameters(("id" = "$response.body#/id")))),
        ("UpdateUser" = (operation_id = "update_user", parameters(("id" = "$response.body#/id")))),
        ("RevokeUserSessions" = (operation_id = "revoke_sessions", parameters(("id" = "$response.body#/id")))),
        ("DeleteUser" = (operation_id = "delete_user", parameters(("id" = "$response.body#/id")))),
    )), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 403, description = "Lacks the permission", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn create_user(
    state: web::Data<AppState>,
    client: Client,
    AuthBody(caller, body): AuthBody<AdminCreateBody>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_request()?;
    let user = state.admin.create_user(caller, request, &client.0).await?;
    Ok(HttpResponse::Created().json(UserView::from(user)))
}

#[utoipa::path(
    patch,
    path = "/api/v1/admin/users/{id}",
    tag = "admin",
    summary = "Change a user (users.change); disabling ends their sessions",
    request_body = AdminUpdateBody,
    params(("id" = String, Path, description = "The numeric id")),
    responses((status = 200, description = "The user", body = UserView), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 403, description = "Lacks the permission", body = ErrorResponse), (status = 404, description = "No such item", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn update_user(
    state: web::Data<AppState>,
    client: Client,
    id: web::Path<String>,
    AuthBody(caller, body): AuthBody<AdminUpdateBody>,
) -> Result<HttpResponse, ApiError> {
    let changes = body.into_changes()?;
    let user = state.admin.update_user(caller, &id, changes, &client.0).await?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/admin/users/{id}",
    tag = "admin",
    summary = "Delete a user (users.delete)",
    params(("id" = String, Path, description = "The numeric id")),
    responses((status = 204, description = "Deleted"), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 403, description = "Lacks the permission", body = ErrorResponse), (status = 404, description = "No such item", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn delete_user(
    state: web::Data<AppState>,
    client: Client,
    caller: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.admin.delete_user(caller.0, &id, &client.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/users/{id}/sessions/revoke",
    tag = "admin",
    summary = "End every session of a user (users.change)",
    params(("id" = String, Path, description = "The numeric id")),
    responses((status = 204, description = "Revoked"), (status = 403, description = "Lacks the permission", body = ErrorResponse), (status = 404, description = "No such item", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn revoke_sessions(
    state: web::Data<AppState>,
    client: Client,
    caller: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.admin.revoke_sessions(caller.0, &id, &client.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/users/{id}/mfa/reset",
    tag = "admin",
    summary = "Turn a user's two-factor authentication off, with a notice by mail (users.change)",
    params(("id" = String, Path, description = "The numeric id")),
    responses((status = 204, description = "Off"), (status = 403, description = "Lacks the permission", body = ErrorResponse), (status = 404, description = "No such item", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn reset_mfa(
    state: web::Data<AppState>,
    client: Client,
    caller: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.admin.reset_mfa(caller.0, &id, &client.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/groups",
    tag = "admin",
    summary = "Create a group (groups.change)",
    request_body = GroupBody,
    responses((status = 201, description = "Created", body = GroupView, links(
        ("GetGroup" = (operation_id = "get_group", parameters(("id" = "$response.body#/id")))),
        ("UpdateGroup" = (operation_id = "update_group", parameters(("id" = "$response.body#/id")))),
        ("DeleteGroup" = (operation_id = "delete_group", parameters(("id" = "$response.body#/id")))),
    )), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 403, description = "Lacks the permission", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn create_group(
    state: web::Data<AppState>,
    client: Client,
    AuthBody(caller, GroupBody { name, permissions }): AuthBody<GroupBody>,
) -> Result<HttpResponse, ApiError> {
    let group = state.admin.create_group(caller, &name, &permissions.unwrap_or_default(), &client.0).await?;
    Ok(HttpResponse::Created().json(GroupView::from(group)))
}

#[utoipa::path(
    patch,
    path = "/api/v1/admin/groups/{id}",
    tag = "admin",
    summary = "Rename a group or set its permissions (groups.change)",
    request_body = GroupPatchBody,
    params(("id" = String, Path, description = "The numeric id")),
    responses((status = 200, description = "The group", body = GroupView), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 403, description = "Lacks the permission", body = ErrorResponse), (status = 404, description = "No such item", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn update_group(
    state: web::Data<AppState>,
    client: Client,
    id: web::Path<String>,
    AuthBody(caller, GroupPatchBody { name, permissions }): AuthBody<GroupPatchBody>,
) -> Result<HttpResponse, ApiError> {
    let group = state.admin.update_group(caller, &id, name.as_deref(), permissions.as_deref(), &client.0).await?;
    Ok(HttpResponse::Ok().json(GroupView::from(group)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/admin/groups/{id}",
    tag = "admin",
    summary = "Delete a group (groups.change; not the built-in ones)",
    params(("id" = String, Path, description = "The numeric id")),
    responses((status = 204, description = "Deleted"), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 403, description = "Lacks the permission", body = ErrorResponse), (status = 404, description = "No such item", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn delete_group(
    state: web::Data<AppState>,
    client: Client,
    caller: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.admin.delete_group(caller.0, &id, &client.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventView {
    id: i64,
    at: String,
    event: String,
    user_id: Option<i64>,
    actor_id: Option<i64>,
    ip: Option<String>,
    user_agent: Option<String>,
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPageView {
    count: i64,
    #[schema(minimum = 1)]
    page: u32,
    #[schema(minimum = 1, maximum = 100)]
    page_size: u32,
    results: Vec<AuditEventView>,
}

/// The audit trail, newest first, filtered by `user` (an id) and `event`.
#[utoipa::path(
    get,
    path = "/api/v1/admin/audit",
    tag = "admin",
    summary = "The audit trail, newest first (audit.view)",
    params(AuditParams),
    responses((status = 200, description = "A page of events", body = AuditPageView), (status = 400, description = "Invalid input", body = ErrorResponse), (status = 403, description = "Lacks the permission", body = ErrorResponse)),
    security(("bearer" = []))
)]
pub async fn list_audit(
    state: web::Data<AppState>,
    caller: AuthUser,
    Query(params): Query<AuditParams>,
) -> Result<HttpResponse, ApiError> {
    let AuditParams { user, event, page, page_size } = &params;
    let (query, page) = state
        .admin
        .list_audit(caller.0, user.as_deref(), event.as_deref(), page.as_deref(), page_size.as_deref())
        .await?;
    let results = page
        .results
        .into_iter()
        .map(|record| AuditEventView {
            id: record.id,
            at: timestamp(record.at),
            event: record.event,
            user_id: record.user_id,
            actor_id: record.actor_id,
            ip: record.ip,
            user_agent: record.user_agent,
            detail: record.detail,
        })
        .collect();
    Ok(HttpResponse::Ok().json(AuditPageView {
        count: page.count,
        page: query.page,
        page_size: query.page_size,
        results,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AdminCreateBody {
    #[schema(format = IdnEmail, max_length = 254)]
    pub(crate) email: String,
    /// Without one, the user is mailed an invitation to choose it (24 h).
    #[schema(value_type = Option<String>, min_length = 8, max_length = 1024)]
    pub(crate) password: Option<SecretString>,
    #[schema(max_length = 150)]
    pub(crate) first_name: Option<String>,
    #[schema(max_length = 150)]
    pub(crate) last_name: Option<String>,
    pub(crate) is_active: Option<bool>,
    pub(crate) is_staff: Option<bool>,
    pub(crate) is_verified: Option<bool>,
    /// Group names; `Regular User` is always added.
    pub(crate) groups: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AdminUpdateBody {
    #[schema(format = IdnEmail, max_length = 254)]
    pub(crate) email: Option<String>,
    #[schema(max_length = 150)]
    pub(crate) first_name: Option<String>,
    #[schema(max_length = 150)]
    pub(crate) last_name: Option<String>,
    /// The same fields and rules as the user's own `PATCH /me`.
    pub(crate) profile: Option<ProfileFields>,
    pub(crate) is_active: Option<bool>,
    pub(crate) is_staff: Option<bool>,
    /// Only a superuser changes this; the last active superuser cannot lose it.
    pub(crate) is_superuser: Option<bool>,
    pub(crate) is_verified: Option<bool>,
    /// The complete set of group names.
    pub(crate) groups: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct GroupBody {
    #[schema(min_length = 1, max_length = 150)]
    pub(crate) name: String,
    pub(crate) permissions: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct GroupPatchBody {
    #[schema(min_length = 1, max_length = 150)]
    pub(crate) name: Option<String>,
    pub(crate) permissions: Option<Vec<String>>,
}

/// The user list's query string. Each value is read as text and parsed by
/// the list's rules, which name the field that is wrong.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListParams {
    /// Case-insensitive substring of email, first or last name; `%` and `_` are literal.
    pub(crate) search: Option<String>,
    #[param(value_type = Option<bool>)]
    pub(crate) is_active: Option<String>,
    #[param(value_type = Option<bool>)]
    pub(crate) is_verified: Option<String>,
    #[param(value_type = Option<bool>)]
    pub(crate) is_staff: Option<String>,
    /// `email`, `date_joined` or `last_login`, `-` for descending; default `-date_joined`.
    pub(crate) ordering: Option<String>,
    /// From 1; a page past the end is empty.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 4294967295.0)]
    pub(crate) page: Option<String>,
    /// Default 20. A page holds at most 100: a larger value is read as 100,
    /// and the answer's `page_size` says what was used.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 4294967295.0)]
    pub(crate) page_size: Option<String>,
}

/// The audit trail's query string.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// A user id.
    #[param(value_type = Option<i64>)]
    pub(crate) user: Option<String>,
    /// An event name, e.g. `login_failed`.
    pub(crate) event: Option<String>,
    /// From 1; a page past the end is empty.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 4294967295.0)]
    pub(crate) page: Option<String>,
    /// Default 20. A page holds at most 100: a larger value is read as 100,
    /// and the answer's `page_size` says what was used.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 4294967295.0)]
    pub(crate) page_size: Option<String>,
}

impl AdminCreateBody {
    /// The fields under the account rules; the console's form reads them alike.
    pub(crate) fn into_request(self) -> Result<AdminCreateRequest, FieldErrors> {
        let AdminCreateBody { email, password, first_name, last_name, is_active, is_staff, is_verified, groups } = self;
        let mut errors = FieldErrors::new();
        let email = parse_email(&mut errors, Some(email));
        let first_name = collect(&mut errors, "first_name", parse_name(first_name.as_deref().unwrap_or_default()));
        let last_name = collect(&mut errors, "last_name", parse_name(last_name.as_deref().unwrap_or_default()));
        let (Some(email), Some(first_name), Some(last_name)) = errors.finish((email, first_name, last_name))? else {
            return Err(FieldErrors::single(NON_FIELD_ERRORS, "The form is incomplete."));
        };
        Ok(AdminCreateRequest {
            email,
            password: password.as_ref().map(|p| p.expose_secret().to_owned()),
            first_name,
            last_name,
            is_active: is_active.unwrap_or(true),
            is_staff: is_staff.unwrap_or(false),
            is_verified: is_verified.unwrap_or(false),
            groups: groups.unwrap_or_default(),
        })
    }
}

impl AdminUpdateBody {
    /// The fields present, under the rules of each; the console's form reads them alike.
    pub(crate) fn into_changes(self) -> Result<AdminUserChanges, FieldErrors> {
        let AdminUpdateBody {
            email,
            first_name,
            last_name,
            profile,
            is_active,
            is_staff,
            is_superuser,
            is_verified,
            groups,
        } = self;
        let mut errors = FieldErrors::new();
        let email = match email {
            Some(raw) => parse_email(&mut errors, Some(raw)),
            None => None,
        };
        let profile = parse_profile(first_name.as_deref(), last_name.as_deref(), profile).unwrap_or_else(|broken| {
            errors.merge(broken);
            ProfilePatch::default()
        });
        errors.finish(AdminUserChanges { email, profile, is_active, is_staff, is_superuser, is_verified, groups })
    }
}

impl BodyRules for UserListParams {}
impl BodyRules for AuditParams {}
impl BodyRules for AdminCreateBody {}
impl BodyRules for AdminUpdateBody {}
impl BodyRules for GroupBody {}
impl BodyRules for GroupPatchBody {}
