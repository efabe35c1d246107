//! The console's shared markup: the frame of every page, the sign-in,
//! start and problem pages, and the form widgets that show each field's
//! messages beside it. maud escapes every value it is given.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use gatehouse_domain::admin::Permission;
use gatehouse_domain::error::NON_FIELD_ERRORS;
use maud::{html, Markup, DOCTYPE};
use time::OffsetDateTime;

use super::form::Form;
use super::{Operator, STYLESHEET_PATH};

/// A form's messages by field, as the use cases name the fields.
pub(crate) type Problems = BTreeMap<String, Vec<String>>;

/// No messages: a form shown for the first time.
pub(crate) static NO_PROBLEMS: Problems = BTreeMap::new();

/// Why the sign-in form is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    SessionEnded,
    SignedOut,
    FormExpired,
}

impl Notice {
    fn text(self) -> &'static str {
        match self {
            Self::SessionEnded => "Your session has ended. Sign in again.",
            Self::SignedOut => "You are signed out.",
            Self::FormExpired => "The sign-in form had expired. Please try again.",
        }
    }
}

/// The message of a page reached after a change, named by its `done` parameter.
pub(crate) fn done_notice(query: &Form) -> Option<&'static str> {
    Some(match query.text("done")? {
        "saved" => "The changes are saved.",
        "unchanged" => "Nothing was changed.",
        "created" => "Created.",
        "sessions_revoked" => "Every session of this user has ended.",
        "mfa_reset" => "Two-factor authentication is off for this user, who has been told by mail.",
        "deleted" => "Deleted.",
        _ => return None,
    })
}

/// Which part of the console a page belongs to, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Home,
    Users,
    Groups,
    Audit,
}

const SECTIONS: [(Section, &str, &str, Permission); 3] = [
    (Section::Users, "Users", "/admin/users", Permission::UsersView),
    (Section::Groups, "Groups", "/admin/groups", Permission::GroupsView),
    (Section::Audit, "Audit trail", "/admin/audit", Permission::AuditView),
];

/// Every page: its title, the operator's navigation and sign-out form, its content.
pub(crate) fn frame(title: &str, operator: Option<&Operator>, section: Section, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (title) " · Gatehouse admin" }
                link rel="stylesheet" href=(STYLESHEET_PATH);
            }
            body {
                header.top {
                    a.brand href="/admin/" aria-current=[(section == Section::Home).then_some("page")] { "Gatehouse admin" }
                    @if let Some(operator) = operator {
                        nav aria-label="Sections" {
                            @for (place, name, path, permission) in SECTIONS {
                                @if operator.may(permission) {
                                    a href=(path) aria-current=[(place == section).then_some("page")] { (name) }
                                }
                            }
                        }
                        form method="post" action="/admin/logout" {
                            (csrf(operator))
                            span.who { (operator.email) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// The hidden field every changing form carries.
pub(crate) fn csrf(operator: &Operator) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(operator.csrf); }
}

/// The sign-in form, and what it was filled with when it is shown again.
#[derive(Debug, Default)]
pub(crate) struct SignInForm<'a> {
    pub next: &'a str,
    pub notice: Option<Notice>,
    pub email: &'a str,
    pub problems: Option<&'a Problems>,
    /// The sign-in form's own CSRF token (there is no session yet).
    pub csrf: &'a str,
}

pub(crate) fn sign_in(form: &SignInForm<'_>) -> Markup {
    let problems = form.problems.unwrap_or(&NO_PROBLEMS);
    let content = html! {
        div.card.narrow {
            @if let Some(notice) = form.notice { p.notice role="status" { (notice.text()) } }
            (summary(problems))
            form method="post" action="/admin/login" {
                input type="hidden" name="csrf_token" value=(form.csrf);
                input type="hidden" name="next" value=(form.next);
                (input(&Input { label: "Email", name: "email", kind: "email", value: form.email, autocomplete: Some("username"), ..Input::default() }, problems))
                (input(&Input { label: "Password", name: "password", kind: "password", autocomplete: Some("current-password"), ..Input::default() }, problems))
                button type="submit" { "Sign in" }
            }
        }
    };
    frame("Sign in", None, Section::Home, content)
}

/// The second step of signing in, for an account with two-factor authentication.
pub(crate) fn second_factor(mfa_token: &str, next: &str, csrf: &str, problems: &Problems) -> Markup {
    // One field takes both kinds of code, so it shows the messages of both.
    let mut problems = problems.clone();
    if let Some(recovery) = problems.remove("recovery_code") {
        problems.entry("code".to_owned()).or_default().extend(recovery);
    }
    let problems = &problems;
    let content = html! {
        div.card.narrow {
            (summary(problems))
            form method="post" action="/admin/login/mfa" {
                input type="hidden" name="csrf_token" value=(csrf);
                input type="hidden" name="next" value=(next);
                input type="hidden" name="mfa_token" value=(mfa_token);
                (input(&Input {
                    label: "Code",
                    name: "code",
                    autocomplete: Some("one-time-code"),
                    hint: Some("The six digits your authenticator app shows, or one of your recovery codes."),
                    ..Input::default()
                }, problems))
                button type="submit" { "Continue" }
            }
        }
    };
    frame("Two-factor authentication", None, Section::Home, content)
}

/// The start page: the sections the operator may open.
pub(crate) fn home(operator: &Operator) -> Markup {
    let content = html! {
        @for (_, name, path, permission) in SECTIONS {
            @if operator.may(permission) {
                div.card {
                    h2 { a href=(path) { (name) } }
                    p.hint { (describe(permission)) }
                }
            }
        }
    };
    frame("Console", Some(operator), Section::Home, content)
}

/// The start page of an account that may do nothing here, with its sign-out form.
pub(crate) fn no_permission(operator: &Operator) -> Markup {
    let content = html! {
        div.card {
            p { "This account has no administrator permission. Sign out, and sign in with one that has." }
        }
    };
    frame("Not allowed", Some(operator), Section::Home, content)
}

fn describe(permission: Permission) -> &'static str {
    match permission {
        Permission::UsersView => "Find accounts, change their names, flags and groups, end their sessions.",
        Permission::GroupsView => "Groups and the permissions they grant.",
        _ => "Who did what, newest first.",
    }
}

/// A page that says what went wrong.
pub(crate) fn problem(status: StatusCode, messages: &[String], request_id: Option<&str>) -> Markup {
    let title = match status.as_u16() {
        400 | 413 | 415 => "The request could not be used",
        403 => "Not allowed",
        404 => "Not found",
        405 => "Not here",
        429 => "Too many attempts",
        503 => "Unavailable for a moment",
        _ => "Something went wrong",
    };
    let content = html! {
        div.card {
            @for message in messages { p { (message) } }
            @if let Some(id) = request_id { p.hint { "Reference: " code { (id) } } }
            p { a href="/admin/" { "Back to the console" } }
        }
    };
    frame(title, None, Section::Home, content)
}

/// The page that asks before a deletion: what goes, and the form that deletes it.
pub(crate) fn confirm_delete(
    operator: &Operator,
    (title, section): (&str, Section),
    path: &str,
    consequence: Markup,
) -> Markup {
    let content = html! {
        div.card {
            p { (consequence) " It cannot be undone." }
            div.actions {
                form method="post" action=(format!("{path}/delete")) {
                    (csrf(operator))
                    button.danger type="submit" { "Delete" }
                }
                a href=(path) { "Cancel" }
            }
        }
    };
    frame(title, Some(operator), section, content)
}

/// The messages that belong to no field of the form, and a word that others
/// are shown beside their fields.
pub(crate) fn summary(problems: &Problems) -> Markup {
    html! {
        @if !problems.is_empty() {
            div.problem role="alert" {
                @for message in problems.get(NON_FIELD_ERRORS).into_iter().flatten() { p { (message) } }
                @if problems.keys().any(|field| field != NON_FIELD_ERRORS) { p { "Please correct the fields marked below." } }
            }
        }
    }
}

/// A field's messages, under it.
pub(crate) fn messages(problems: &Problems, name: &str) -> Markup {
    html! {
        @if let Some(list) = problems.get(name) {
            ul.errors id=(format!("{name}-errors")) { @for message in list { li { (message) } } }
        }
    }
}

/// A labelled text input.
#[derive(Debug, Default)]
pub(crate) struct Input<'a> {
    pub label: &'a str,
    pub name: &'a str,
    /// `text` when empty.
    pub kind: &'a str,
    pub value: &'a str,
    pub autocomplete: Option<&'a str>,
    pub hint: Option<&'a str>,
    pub required: bool,
}

pub(crate) fn input(field: &Input<'_>, problems: &Problems) -> Markup {
    let invalid = problems.contains_key(field.name);
    let kind = if field.kind.is_empty() { "text" } else { field.kind };
    html! {
        div.field.invalid[invalid] {
            label for=(field.name) { (field.label) }
            input type=(kind) id=(field.name) name=(field.name) value=(field.value)
                autocomplete=[field.autocomplete] required[field.required]
                aria-invalid=[invalid.then_some("true")]
                aria-describedby=[invalid.then(|| format!("{}-errors", field.name))];
            @if let Some(hint) = field.hint { div.hint { (hint) } }
            (messages(problems, field.name))
        }
    }
}

/// A labelled checkbox; a disabled one is shown, not sent.
pub(crate) fn checkbox(label: &str, name: &str, value: &str, checked: bool, disabled: bool) -> Markup {
    html! {
        label.check {
            input type="checkbox" name=(name) value=(value) checked[checked] disabled[disabled];
            (label)
        }
    }
}

/// A labelled choice among `options` (value, label).
pub(crate) fn select(label: &str, name: &str, options: &[(&str, &str)], selected: &str, problems: &Problems) -> Markup {
    let invalid = problems.contains_key(name);
    html! {
        div.field.invalid[invalid] {
            label for=(name) { (label) }
            select id=(name) name=(name) aria-invalid=[invalid.then_some("true")] {
                @for (value, text) in options {
                    option value=(value) selected[*value == selected] { (text) }
                }
            }
            (messages(problems, name))
        }
    }
}

/// Yes or no, readable without colour.
pub(crate) fn yes_no(value: bool) -> Markup {
    html! { @if value { span.yes { "Yes" } } @else { span.no { "No" } } }
}

/// A moment as operators read it.
pub(crate) fn moment(at: OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    at.to_offset(time::UtcOffset::UTC).format(&format).unwrap_or_default()
}

/// The previous and next links of a paged list, keeping its filters.
pub(crate) fn pager(path: &str, query: &[(&str, &str)], page: u32, page_size: u32, count: i64) -> Markup {
    let pages = u32::try_from((count.max(0) as u64).div_ceil(u64::from(page_size.max(1)))).unwrap_or(u32::MAX).max(1);
    let link = |page: u32| {
        let mut serializer = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in query.iter().filter(|(name, value)| *name != "page" && !value.is_empty()) {
            serializer.append_pair(name, value);
        }
        serializer.append_pair("page", &page.to_string());
        format!("{path}?{}", serializer.finish())
    };
    html! {
        nav.pages aria-label="Pages" {
            @if page > 1 { a href=(link(page - 1)) rel="prev" { "← Previous" } }
            span { "Page " (page) " of " (pages) " · " (count) " in all" }
            @if page < pages { a href=(link(page + 1)) rel="next" { "Next →" } }
        }
    }
}
