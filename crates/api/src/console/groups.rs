//! The groups pages: every group with the form that adds one, and one group
//! with its name and permissions to change, or to delete after a confirmation.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use gatehouse_domain::admin::{AdminError, Group, Permission};
use gatehouse_domain::user::{ADMIN_USER_GROUP, REGULAR_USER_GROUP};
use maud::{html, Markup};

use super::form::Form;
use super::pages::{
    checkbox, confirm_delete, csrf, done_notice, frame, input, messages, summary, Input, Problems, Section, NO_PROBLEMS,
};
use super::{html, or_missing, see_other, ConsoleError, ConsoleForm, Operator};
use crate::extract::Client;
use crate::state::AppState;

fn group_path(id: i64) -> String {
    format!("/admin/groups/{id}")
}

/// The two groups every installation has; the use cases refuse to change them.
fn built_in(group: &Group) -> bool {
    group.name == REGULAR_USER_GROUP || group.name == ADMIN_USER_GROUP
}

pub(super) async fn list(
    state: web::Data<AppState>,
    operator: Operator,
    req: HttpRequest,
) -> Result<HttpResponse, ConsoleError> {
    let groups = state.admin.list_groups(operator.principal).await?;
    let notice = done_notice(&Form::parse(req.query_string().as_bytes()));
    Ok(html(StatusCode::OK, list_page(&operator, &groups, notice, &Form::default(), &NO_PROBLEMS)))
}

pub(super) async fn create(
    state: web::Data<AppState>,
    client: Client,
    ConsoleForm(operator, form): ConsoleForm,
) -> Result<HttpResponse, ConsoleError> {
    let name = form.text("name").unwrap_or_default();
    match state.admin.create_group(operator.principal, name, &form.all("permissions"), &client.0).await {
        Ok(group) => Ok(see_other(&format!("{}?done=created", group_path(group.id)))),
        Err(AdminError::Invalid(errors)) => {
            let groups = state.admin.list_groups(operator.principal).await?;
            Ok(html(StatusCode::BAD_REQUEST, list_page(&operator, &groups, None, &form, &errors.into_map())))
        }
        Err(other) => Err(other.into()),
    }
}

fn list_page(operator: &Operator, groups: &[Group], notice: Option<&str>, form: &Form, problems: &Problems) -> Markup {
    let content = html! {
        @if let Some(notice) = notice { p.notice role="status" { (notice) } }
        div.table {
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Permissions" } } }
                tbody {
                    @for group in groups {
                        tr {
                            td { a href=(group_path(group.id)) { (group.name) } }
                            td { (names(&group.permissions)) }
                        }
                    }
                }
            }
        }
        @if operator.may(Permission::GroupsChange) {
            form.card method="post" action="/admin/groups" {
                h2 { "Add a group" }
                (csrf(operator))
                (summary(problems))
                (group_fields(form.text("name").unwrap_or_default(), &form.all("permissions"), problems))
                button type="submit" { "Add" }
            }
        }
    };
    frame("Groups", Some(operator), Section::Groups, content)
}

fn names(permissions: &[Permission]) -> String {
    match permissions {
        [] => "None".to_owned(),
        _ => permissions.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
    }
}

/// A group's name and its permissions, as the forms ask for them.
fn group_fields(name: &str, chosen: &[String], problems: &Problems) -> Markup {
    html! {
        (input(&Input { label: "Name", name: "name", value: name, required: true, ..Input::default() }, problems))
        fieldset.invalid[problems.contains_key("permissions")] {
            legend { "Permissions" }
            @for permission in Permission::ALL {
                (checkbox(permission.as_str(), "permissions", permission.as_str(), chosen.iter().any(|c| c == permission.as_str()), false))
            }
            div.hint { "You can grant only the permissions you hold." }
            (messages(problems, "permissions"))
        }
    }
}

pub(super) async fn show(
    state: web::Data<AppState>,
    operator: Operator,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ConsoleError> {
    let group = state.admin.get_group(operator.principal, &id).await.map_err(or_missing("group"))?;
    let notice = done_notice(&Form::parse(req.query_string().as_bytes()));
    let chosen: Vec<String> = group.permissions.iter().map(|p| p.as_str().to_owned()).collect();
    Ok(html(StatusCode::OK, group_page(&operator, &group, notice, (&group.name, &chosen), &NO_PROBLEMS)))
}

pub(super) async fn update(
    state: web::Data<AppState>,
    client: Client,
    id: web::Path<String>,
    ConsoleForm(operator, form): ConsoleForm,
) -> Result<HttpResponse, ConsoleError> {
    let name = form.text("name").unwrap_or_default();
    let permissions = form.all("permissions");
    match state.admin.update_group(operator.principal, &id, Some(name), Some(&permissions), &client.0).await {
        Ok(group) => Ok(see_other(&format!("{}?done=saved", group_path(group.id)))),
        Err(AdminError::Invalid(errors)) => {
            let group = state.admin.get_group(operator.principal, &id).await.map_err(or_missing("group"))?;
            let page = group_page(&operator, &group, None, (name, &permissions), &errors.into_map());
            Ok(html(StatusCode::BAD_REQUEST, page))
        }
        Err(other) => Err(or_missing("group")(other)),
    }
}

/// A group, and its form with `fields` (the stored ones, or those just posted).
fn group_page(
    operator: &Operator,
    group: &Group,
    notice: Option<&str>,
    (name, chosen): (&str, &[String]),
    problems: &Problems,
) -> Markup {
    let path = group_path(group.id);
    let changeable = operator.may(Permission::GroupsChange) && !built_in(group);
    let content = html! {
        @if let Some(notice) = notice { p.notice role="status" { (notice) } }
        div.card {
            dl.facts {
                dt { "Id" } dd { (group.id) }
                dt { "Permissions" } dd { (names(&group.permissions)) }
            }
            @if built_in(group) { p.hint { "A built-in group: it cannot be changed or deleted." } }
        }
        @if changeable {
            form.card method="post" action=(path) {
                h2 { "Change" }
                (csrf(operator))
                (summary(problems))
                (group_fields(name, chosen, problems))
                button type="submit" { "Save" }
            }
            p { a.button.quiet href=(format!("{path}/delete")) { "Delete this group…" } }
        }
    };
    frame(&group.name, Some(operator), Section::Groups, content)
}

pub(super) async fn confirm_deletion(
    state: web::Data<AppState>,
    operator: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ConsoleError> {
    operator.require(Permission::GroupsChange)?;
    let group = state.admin.get_group(operator.principal, &id).await.map_err(or_missing("group"))?;
    let consequence = html! {
        "This deletes the group " strong { (group.name) } ". Its members keep their accounts but lose what it granted."
    };
    Ok(html(
        StatusCode::OK,
        confirm_delete(&operator, ("Delete this group?", Section::Groups), &group_path(group.id), consequence),
    ))
}

pub(super) async fn delete(
    state: web::Data<AppState>,
    client: Client,
    id: web::Path<String>,
    ConsoleForm(operator, _): ConsoleForm,
) -> Result<HttpResponse, ConsoleError> {
    state.admin.delete_group(operator.principal, &id, &client.0).await.map_err(or_missing("group"))?;
    Ok(see_other("/admin/groups?done=deleted"))
}
