//! The audit trail, newest first, filtered by user and event.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use gatehouse_domain::admin::AdminError;
use gatehouse_domain::audit::{AuditKind, AuditPage, AuditQuery};
use maud::{html, Markup};

use super::form::Form;
use super::pages::{frame, input, messages, moment, pager, select, summary, Input, Problems, Section, NO_PROBLEMS};
use super::{html, ConsoleError, Operator};
use crate::state::AppState;

pub(super) async fn list(
    state: web::Data<AppState>,
    operator: Operator,
    req: HttpRequest,
) -> Result<HttpResponse, ConsoleError> {
    let query = Form::parse(req.query_string().as_bytes());
    let found = state
        .admin
        .list_audit(
            operator.principal,
            query.value("user"),
            query.value("event"),
            query.value("page"),
            query.value("page_size"),
        )
        .await;
    match found {
        Ok(found) => Ok(html(StatusCode::OK, audit_page(&operator, &query, Some(&found), &NO_PROBLEMS))),
        Err(AdminError::Invalid(errors)) => {
            Ok(html(StatusCode::BAD_REQUEST, audit_page(&operator, &query, None, &errors.into_map())))
        }
        Err(other) => Err(other.into()),
    }
}

fn audit_page(
    operator: &Operator,
    query: &Form,
    found: Option<&(AuditQuery, AuditPage)>,
    problems: &Problems,
) -> Markup {
    let given = |name: &str| query.text(name).unwrap_or_default();
    let mut events: Vec<(&str, &str)> = vec![("", "Any")];
    events.extend(AuditKind::ALL.iter().map(|kind| (kind.as_str(), kind.as_str())));
    let content = html! {
        (summary(problems))
        form.filters.card method="get" action="/admin/audit" role="search" {
            (input(&Input { label: "User id", name: "user", value: given("user"), ..Input::default() }, problems))
            (select("Event", "event", &events, given("event"), problems))
            button type="submit" { "Show" }
        }
        (messages(problems, "page"))
        (messages(problems, "page_size"))
        @if let Some((list, page)) = found {
            @if page.results.is_empty() {
                p { "Nothing recorded matches." }
            } @else {
                div.table {
                    table {
                        thead { tr {
                            th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "User" }
                            th scope="col" { "By" } th.hide-narrow scope="col" { "From" } th.hide-narrow scope="col" { "Detail" }
                        } }
                        tbody {
                            @for record in &page.results {
                                tr {
                                    td { (moment(record.at)) }
                                    td { (record.event) }
                                    td { (user_link(record.user_id)) }
                                    td { (user_link(record.actor_id)) }
                                    td.hide-narrow { (record.ip.as_deref().unwrap_or("")) }
                                    td.hide-narrow { code { (record.detail) } }
                                }
                            }
                        }
                    }
                }
            }
            @let kept = [("user", given("user")), ("event", given("event")), ("page_size", given("page_size"))];
            (pager("/admin/audit", &kept, list.page, list.page_size, page.count))
        }
    };
    frame("Audit trail", Some(operator), Section::Audit, content)
}

fn user_link(id: Option<i64>) -> Markup {
    html! { @if let Some(id) = id { a href=(format!("/admin/users/{id}")) { (id) } } }
}
