//! Reads a Django project's accounts from its database, PostgreSQL or
//! SQLite, whatever its user model: the tables and columns are found by
//! name at run time (API.md, "Importing from Django"), and every value is
//! read as text, then parsed here. Nothing is ever written to the source.
//!
//! Diesel's statically typed queries do not fit tables whose shape is only
//! known when the command runs, so this adapter speaks to each database
//! through its plain driver instead.

mod source;

use std::collections::{BTreeMap, HashMap};

use gatehouse_domain::import::{DjangoProfile, DjangoTables, DjangoUser, UnreadableRow};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::source::Source;

/// Which tables to read, when the command names them.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub user_table: Option<String>,
    pub profile_table: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("--from must be a postgres:// or sqlite:// URL")]
    Url,
    #[error("cannot open the Django database: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Schema(String),
    #[error("cannot read table {table}: {problem}")]
    Read { table: String, problem: String },
}

/// The user columns read, by the names the contract matches.
const USER_COLUMNS: [&str; 17] = [
    "id",
    "email",
    "password",
    "first_name",
    "last_name",
    "name",
    "is_active",
    "is_staff",
    "is_superuser",
    "is_admin",
    "is_verified",
    "date_joined",
    "created_at",
    "last_login",
    "phone",
    "gender",
    "bio",
];
const PROFILE_COLUMNS: [&str; 3] = ["phone", "gender", "bio"];

/// Reads every user row with its groups and profile.
pub async fn read(url: &str, options: &Options) -> Result<DjangoTables, SourceError> {
    let source = Source::open(url).await?;
    let catalog = source.catalog().await?;
    let user_table = user_table(&catalog, options.user_table.as_deref())?;
    let user_columns = present(&catalog[&user_table], &USER_COLUMNS);
    if !user_columns.contains(&"id") {
        return Err(SourceError::Schema(format!("the user table {user_table} has no id column")));
    }
    let profile_table = profile_table(&catalog, &user_table, options.profile_table.as_deref())?;

    let groups = match catalog.get("auth_group") {
        Some(columns) if columns.iter().any(|c| c == "name") => {
            source.select("auth_group", &["id", "name"]).await?.into_iter().filter_map(Result::ok).collect()
        }
        _ => Vec::new(),
    };
    let group_names: HashMap<String, String> =
        groups.iter().filter_map(|row| Some((row[0].clone()?, row[1].clone()?))).collect();
    let memberships = memberships(&source, &catalog, &user_table, &group_names).await?;
    let profiles = match &profile_table {
        Some(table) => {
            let mut columns = vec!["user_id"];
            columns.extend(present(&catalog[table], &PROFILE_COLUMNS));
            let rows = source.select(table, &columns).await?;
            rows.into_iter()
                .filter_map(Result::ok)
                .filter_map(|row| {
                    let cell = |name: &str| columns.iter().position(|c| *c == name).and_then(|i| row[i].clone());
                    let user_id = cell("user_id")?.parse::<i64>().ok()?;
                    Some((user_id, DjangoProfile { phone: cell("phone"), gender: cell("gender"), bio: cell("bio") }))
                })
                .collect()
        }
        None => HashMap::new(),
    };

    let rows = source.select(&user_table, &user_columns).await?;
    let users = rows
        .into_iter()
        .map(|row| {
            let row = row.map_err(|problem| UnreadableRow { id: None, problem })?;
            let cells: HashMap<&str, Option<String>> = user_columns.iter().copied().zip(row).collect();
            user(&cells, &memberships, &profiles)
        })
        .collect();
    let mut group_list: Vec<String> = group_names.into_values().collect();
    group_list.sort();
    Ok(DjangoTables { user_table, profile_table, users, groups: group_list })
}

/// `--user-table`, or the one table with `email`, `password` and `last_login`.
fn user_table(catalog: &BTreeMap<String, Vec<String>>, named: Option<&str>) -> Result<String, SourceError> {
    if let Some(named) = named {
        let columns = catalog
            .get(named)
            .ok_or_else(|| SourceError::Schema(format!("the Django database has no table {named}")))?;
        for required in ["email", "password"] {
            if !columns.iter().any(|c| c == required) {
                return Err(SourceError::Schema(format!("the user table {named} has no {required} column")));
            }
        }
        return Ok(named.to_owned());
    }
    let candidates: Vec<&String> = catalog
        .iter()
        .filter(|(_, columns)| ["email", "password", "last_login"].iter().all(|c| columns.iter().any(|have| have == c)))
        .map(|(table, _)| table)
        .collect();
    match candidates[..] {
        [table] => Ok(table.clone()),
        [] => Err(SourceError::Schema(
            "no table has the columns email, password and last_login: is this a Django database? \
             Name the user table with --user-table"
                .into(),
        )),
        _ => Err(SourceError::Schema(format!(
            "several tables could be the user table ({}): name one with --user-table",
            candidates.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// `--profile-table`, or the one other table with `user_id` and any of `phone`, `gender`, `bio`.
fn profile_table(
    catalog: &BTreeMap<String, Vec<String>>,
    user_table: &str,
    named: Option<&str>,
) -> Result<Option<String>, SourceError> {
    let fits = |columns: &[String]| {
        columns.iter().any(|c| c == "user_id") && columns.iter().any(|c| PROFILE_COLUMNS.contains(&c.as_str()))
    };
    if let Some(named) = named {
        let columns = catalog
            .get(named)
            .ok_or_else(|| SourceError::Schema(format!("the Django database has no table {named}")))?;
        if !fits(columns) {
            return Err(SourceError::Schema(format!(
                "the profile table {named} needs a user_id column and one of phone, gender, bio"
            )));
        }
        return Ok(Some(named.to_owned()));
    }
    let candidates: Vec<&String> =
        catalog.iter().filter(|(table, columns)| *table != user_table && fits(columns)).map(|(t, _)| t).collect();
    match candidates[..] {
        [] => Ok(None),
        [table] => Ok(Some(table.clone())),
        _ => Err(SourceError::Schema(format!(
            "several tables could be the profile table ({}): name one with --profile-table",
            candidates.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Group names per user id, from `<user table>_groups` (Django's naming).
async fn memberships(
    source: &Source,
    catalog: &BTreeMap<String, Vec<String>>,
    user_table: &str,
    group_names: &HashMap<String, String>,
) -> Result<HashMap<i64, Vec<String>>, SourceError> {
    let table = format!("{user_table}_groups");
    let Some(columns) = catalog.get(&table) else { return Ok(HashMap::new()) };
    let user_column = columns.iter().find(|c| c.ends_with("_id") && *c != "group_id");
    let (Some(user_column), true) = (user_column, columns.iter().any(|c| c == "group_id")) else {
        return Err(SourceError::Schema(format!("the membership table {table} has no user and group_id columns")));
    };
    let mut memberships: HashMap<i64, Vec<String>> = HashMap::new();
    for row in source.select(&table, &[user_column, "group_id"]).await?.into_iter().filter_map(Result::ok) {
        let (Some(user), Some(group)) = (&row[0], &row[1]) else { continue };
        if let (Ok(user), Some(name)) = (user.parse::<i64>(), group_names.get(group)) {
            memberships.entry(user).or_default().push(name.clone());
        }
    }
    Ok(memberships)
}

fn present<'c>(columns: &[String], wanted: &[&'c str]) -> Vec<&'c str> {
    wanted.iter().copied().filter(|w| columns.iter().any(|c| c == w)).collect()
}

fn user(
    cells: &HashMap<&str, Option<String>>,
    memberships: &HashMap<i64, Vec<String>>,
    profiles: &HashMap<i64, DjangoProfile>,
) -> Result<DjangoUser, UnreadableRow> {
    let text = |name: &str| cells.get(name).cloned().flatten();
    let raw_id = text("id").unwrap_or_default();
    let id = raw_id
        .parse::<i64>()
        .map_err(|_| UnreadableRow { id: None, problem: format!("the id {raw_id:?} is not an integer") })?;
    let unreadable = |problem: String| UnreadableRow { id: Some(id), problem };
    let flag =
        |name: &str| text(name).map(|v| parse_bool(&v).ok_or(format!("{name} {v:?} is not a boolean"))).transpose();
    let time = |name: &str| text(name).map(|v| parse_time(&v).ok_or(format!("{name} {v:?} is not a time"))).transpose();
    let own_profile = PROFILE_COLUMNS.iter().any(|c| cells.contains_key(c)).then(|| DjangoProfile {
        phone: text("phone"),
        gender: text("gender"),
        bio: text("bio"),
    });
    Ok(DjangoUser {
        id,
        email: text("email"),
        password: text("password"),
        first_name: text("first_name"),
        last_name: text("last_name"),
        name: text("name"),
        is_active: flag("is_active").map_err(unreadable)?,
        is_staff: flag("is_staff").map_err(unreadable)?,
        is_superuser: flag("is_superuser").map_err(unreadable)?,
        is_admin: flag("is_admin").map_err(unreadable)?,
        is_verified: flag("is_verified").map_err(unreadable)?,
        date_joined: time("date_joined").map_err(unreadable)?,
        created_at: time("created_at").map_err(unreadable)?,
        last_login: time("last_login").map_err(unreadable)?,
        groups: memberships.get(&id).cloned().unwrap_or_default(),
        profile: profiles.get(&id).cloned().or(own_profile),
    })
}

/// PostgreSQL writes `t`/`f`, SQLite `1`/`0`.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "t" | "true" | "1" | "True" => Some(true),
        "f" | "false" | "0" | "False" => Some(false),
        _ => None,
    }
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM]]` (or with `T`, or `Z`): how
/// PostgreSQL prints a timestamp in UTC and how Django stores one in SQLite.
/// A time without an offset is in UTC, as Django writes it with `USE_TZ`.
fn parse_time(text: &str) -> Option<OffsetDateTime> {
    const LAYOUT: &[BorrowedFormatItem<'_>] = format_description!(
        version = 2,
        "[year]-[month]-[day][first [ ] [T]][hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    let text = text.trim().trim_end_matches('Z');
    let (local, offset) = match text.rfind(['+', '-']).filter(|at| *at > 10) {
        Some(at) => (&text[..at], Some(&text[at..])),
        None => (text, None),
    };
    let offset = match offset {
        None => UtcOffset::UTC,
        Some(offset) => {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let digits: String = offset[1..].chars().filter(char::is_ascii_digit).collect();
            let hours: i8 = digits.get(..2)?.parse().ok()?;
            let minutes: i8 = digits.get(2..4).map_or(Some(0), |m| m.parse().ok())?;
            UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()?
        }
    };
    Some(PrimitiveDateTime::parse(local, LAYOUT).ok()?.assume_offset(offset).to_offset(UtcOffset::UTC))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn times_read_as_either_database_prints_them() {
        let at = datetime!(2025-01-06 09:05:00.014992 UTC);
        assert_eq!(parse_time("2025-01-06 09:05:00.014992+00"), Some(at));
        assert_eq!(parse_time("2025-01-06 09:05:00.014992"), Some(at));
        assert_eq!(parse_time("2025-01-06T09:05:00.014992Z"), Some(at));
        assert_eq!(parse_time("2025-01-06 11:05:00.014992+02:00"), Some(at));
        assert_eq!(parse_time("2025-01-06 09:05:00"), Some(datetime!(2025-01-06 09:05:00 UTC)));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn booleans_read_as_either_database_prints_them() {
        assert_eq!(
            (parse_bool("t"), parse_bool("1"), parse_bool("f"), parse_bool("0")),
            (Some(true), Some(true), Some(false), Some(false))
        );
        assert_eq!(parse_bool("yes"), None);
    }
}
