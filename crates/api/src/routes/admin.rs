//! The admin API: users and groups, each route behind its permission.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use gatehouse_domain::admin::{Group, RawUserQuery};
use gatehouse_domain::FieldErrors;
use serde::Serialize;

use crate::error::ApiError;
use crate::extract::AuthUser;
use crate::state::AppState;
use crate::views::UserView;

#[derive(Debug, Serialize)]
struct GroupView {
    id: i64,
    name: String,
    permissions: Vec<&'static str>,
}

impl From<Group> for GroupView {
    fn from(group: Group) -> Self {
        Self { id: group.id, name: group.name, permissions: group.permissions.iter().map(|p| p.as_str()).collect() }
    }
}

#[derive(Debug, Serialize)]
struct PageView {
    count: i64,
    page: u32,
    page_size: u32,
    results: Vec<UserView>,
}

fn query_params(req: &HttpRequest) -> Result<HashMap<String, String>, ApiError> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|_| ApiError::validation(FieldErrors::single("non_field_errors", "The query string is malformed.")))
}

pub async fn list_users(
    state: web::Data<AppState>,
    caller: AuthUser,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let params = query_params(&req)?;
    let param = |name: &str| params.get(name).map(String::as_str);
    let raw = RawUserQuery {
        search: param("search"),
        is_active: param("is_active"),
        is_verified: param("is_verified"),
        is_staff: param("is_staff"),
        ordering: param("ordering"),
        page: param("page"),
        page_size: param("page_size"),
    };
    let (query, page) = state.admin.list_users(caller.0, raw).await?;
    Ok(HttpResponse::Ok().json(PageView {
        count: page.count,
        page: query.page,
        page_size: query.page_size,
        results: page.results.into_iter().map(UserView::from).collect(),
    }))
}

pub async fn get_user(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user = state.admin.get_user(caller.0, &id).await?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

pub async fn list_groups(state: web::Data<AppState>, caller: AuthUser) -> Result<HttpResponse, ApiError> {
    let groups = state.admin.list_groups(caller.0).await?;
    Ok(HttpResponse::Ok().json(groups.into_iter().map(GroupView::from).collect::<Vec<_>>()))
}

pub async fn get_group(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let group = state.admin.get_group(caller.0, &id).await?;
    Ok(HttpResponse::Ok().json(GroupView::from(group)))
}
