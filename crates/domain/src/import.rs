//! Moving a Django project's accounts in (`gatehouse import-django`): which
//! rows become which accounts, what is skipped and why. How the Django
//! tables are read is an adapter's business; this is the contract's rules
//! (API.md, "Importing from Django") on the rows it read.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::email::Email;
use crate::error::PortError;
use crate::password::PasswordHash;
use crate::ports::PasswordHasher;
use crate::user::{self, Profile, UserId, REGULAR_USER_GROUP};

/// Rows written in one transaction: a failure leaves the batch or nothing.
pub const BATCH_SIZE: usize = 500;

/// One row of the Django user table, its columns matched by name. A column
/// the table lacks is `None`; the rules below fill it in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DjangoUser {
    pub id: i64,
    pub email: Option<String>,
    pub password: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// A custom model's single name column, kept as the first name.
    pub name: Option<String>,
    pub is_active: Option<bool>,
    pub is_staff: Option<bool>,
    pub is_superuser: Option<bool>,
    /// A custom model's single privilege column: staff and superuser.
    pub is_admin: Option<bool>,
    pub is_verified: Option<bool>,
    pub date_joined: Option<OffsetDateTime>,
    /// A custom model's date joined.
    pub created_at: Option<OffsetDateTime>,
    pub last_login: Option<OffsetDateTime>,
    /// The names of the Django groups the user is in.
    pub groups: Vec<String>,
    pub profile: Option<DjangoProfile>,
}

/// A row of the profile table (or the user table's own profile columns).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DjangoProfile {
    pub phone: Option<String>,
    pub gender: Option<String>,
    pub bio: Option<String>,
}

/// What the source read: every user row (a row it could not read at all
/// is its id and the problem), and the Django groups by name.
#[derive(Debug, Clone, Default)]
pub struct DjangoTables {
    /// The table the users came from, for the report.
    pub user_table: String,
    pub profile_table: Option<String>,
    pub users: Vec<Result<DjangoUser, UnreadableRow>>,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableRow {
    pub id: Option<i64>,
    pub problem: String,
}

/// An account as the import writes it: Django's id and hash kept.
#[derive(Debug, Clone)]
pub struct ImportedUser {
    pub id: UserId,
    pub email: Email,
    /// As Django wrote it; `None` for an empty password.
    pub password_hash: Option<PasswordHash>,
    pub first_name: String,
    pub last_name: String,
    pub is_active: bool,
    pub is_staff: bool,
    pub is_superuser: bool,
    pub is_verified: bool,
    pub date_joined: OffsetDateTime,
    pub last_login: Option<OffsetDateTime>,
    /// `Regular User` and the user's own Django groups, sorted.
    pub groups: Vec<String>,
    /// `None` when Django had no profile row (the account's profile is empty).
    pub profile: Option<Profile>,
}

/// Why a row is not imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    EmptyEmail,
    InvalidEmail(String),
    /// Equal to these other rows' addresses but for case: all are skipped.
    EmailCaseCollision {
        with: Vec<i64>,
    },
    MalformedPasswordHash(String),
    /// A field breaks a rule that leaves no account to make (a name too
    /// long, a control character).
    InvalidField {
        field: &'static str,
        problem: String,
    },
    Unreadable(String),
    /// Another Gatehouse account, not imported, has this id.
    IdTaken,
    /// Another Gatehouse account has this address.
    EmailTaken,
}

impl SkipReason {
    /// The reason's stable name in the report.
    pub fn code(&self) -> &'static str {
        match self {
            Self::EmptyEmail => "empty_email",
            Self::InvalidEmail(_) => "invalid_email",
            Self::EmailCaseCollision { .. } => "email_case_collision",
            Self::MalformedPasswordHash(_) => "malformed_password_hash",
            Self::InvalidField { .. } => "invalid_field",
            Self::Unreadable(_) => "unreadable_row",
            Self::IdTaken => "id_taken",
            Self::EmailTaken => "email_taken",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EmptyEmail => write!(f, "the email is empty"),
            Self::InvalidEmail(problem) => write!(f, "the email is invalid: {problem}"),
            Self::EmailCaseCollision { with } => {
                let ids: Vec<String> = with.iter().map(ToString::to_string).collect();
                write!(f, "the email equals that of id {} but for case; settle them and run again", ids.join(", "))
            }
            Self::MalformedPasswordHash(problem) => write!(f, "the password hash is malformed: {problem}"),
            Self::InvalidField { field, problem } => write!(f, "{field}: {problem}"),
            Self::Unreadable(problem) => write!(f, "the row cannot be read: {problem}"),
            Self::IdTaken => write!(f, "the id belongs to a Gatehouse account that was not imported"),
            Self::EmailTaken => write!(f, "the email belongs to another Gatehouse account"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub id: Option<i64>,
    pub email: Option<String>,
    pub reason: SkipReason,
}

/// A profile value left out (the user is still imported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub id: i64,
    pub field: &'static str,
    pub problem: String,
}

/// What the store did with one imported user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Added,
    /// Imported before: names, flags, groups and profile refreshed; the
    /// password too unless it changed in Gatehouse since.
    Updated {
        password_kept: bool,
    },
    Skipped(SkipReason),
}

/// The store side of an import.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait ImportStore: Send + Sync {
    /// Writes `users` in one transaction, each with its id, profile and
    /// groups, creates the `groups` (and every group a user is in) by name
    /// when missing, and moves the id sequence past the ids; answers one
    /// outcome per user, in order. An id or address of an account that was
    /// not imported is a skip. With `dry_run`, decides the same and rolls
    /// everything back.
    async fn import_batch(
        &self,
        users: &[ImportedUser],
        groups: &[String],
        now: OffsetDateTime,
        dry_run: bool,
    ) -> Result<Vec<Written>, PortError>;
}

/// The summary the command prints.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub user_table: String,
    pub profile_table: Option<String>,
    pub rows: usize,
    pub added: usize,
    pub updated: usize,
    /// Updated users whose password changed in Gatehouse since the last import.
    pub passwords_kept: usize,
    pub groups: usize,
    pub profiles: usize,
    pub skipped: Vec<Skipped>,
    pub warnings: Vec<Warning>,
    pub dry_run: bool,
}

impl ImportReport {
    pub fn imported(&self) -> usize {
        self.added + self.updated
    }
}

/// The accounts a set of rows becomes, and the rows skipped before any write.
#[derive(Debug, Default)]
pub struct Plan {
    pub users: Vec<ImportedUser>,
    pub skipped: Vec<Skipped>,
    pub warnings: Vec<Warning>,
}

/// Applies the rules to every row: addresses, their case collisions, hash
/// formats (`check_hash`), names, flags, groups and profiles.
pub fn plan(rows: Vec<Result<DjangoUser, UnreadableRow>>, check_hash: impl Fn(&str) -> Result<(), String>) -> Plan {
    let mut plan = Plan::default();
    let mut candidates = Vec::new();
    for row in rows {
        match row {
            Err(unreadable) => plan.skipped.push(Skipped {
                id: unreadable.id,
                email: None,
                reason: SkipReason::Unreadable(unreadable.problem),
            }),
            Ok(row) => match account(&row, &check_hash, &mut plan.warnings) {
                Ok(user) => candidates.push((row.email, user)),
                Err(reason) => plan.skipped.push(Skipped { id: Some(row.id), email: row.email.clone(), reason }),
            },
        }
    }
    let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
    for (_, user) in &candidates {
        by_key.entry(user.email.key().as_str().to_owned()).or_default().push(user.id.get());
    }
    for (raw_email, user) in candidates {
        let ids = &by_key[user.email.key().as_str()];
        if ids.len() == 1 {
            plan.users.push(user);
        } else {
            let with = ids.iter().copied().filter(|id| *id != user.id.get()).collect();
            let reason = SkipReason::EmailCaseCollision { with };
            plan.skipped.push(Skipped { id: Some(user.id.get()), email: raw_email, reason });
        }
    }
    plan
}

fn account(
    row: &DjangoUser,
    check_hash: &impl Fn(&str) -> Result<(), String>,
    warnings: &mut Vec<Warning>,
) -> Result<ImportedUser, SkipReason> {
    let raw_email = row.email.as_deref().map(str::trim).unwrap_or_default();
    if raw_email.is_empty() {
        return Err(SkipReason::EmptyEmail);
    }
    let email = Email::parse(raw_email).map_err(|e| SkipReason::InvalidEmail(e.to_string()))?;
    let password_hash = match row.password.as_deref() {
        None | Some("") => None,
        Some(hash) => {
            check_hash(hash).map_err(SkipReason::MalformedPasswordHash)?;
            Some(PasswordHash::new(hash))
        }
    };
    let name = |field: &'static str, raw: Option<&str>| {
        user::parse_name(raw.unwrap_or_default())
            .map_err(|rule| SkipReason::InvalidField { field, problem: rule.to_string() })
    };
    let mut first_name = name("first_name", row.first_name.as_deref())?;
    let last_name = name("last_name", row.last_name.as_deref())?;
    if first_name.is_empty() && last_name.is_empty() {
        first_name = name("name", row.name.as_deref())?;
    }
    let mut groups: BTreeSet<String> = row.groups.iter().cloned().collect();
    groups.insert(REGULAR_USER_GROUP.to_owned());
    let id = UserId::new(row.id);
    Ok(ImportedUser {
        id,
        email,
        password_hash,
        first_name,
        last_name,
        is_active: row.is_active.unwrap_or(true),
        is_staff: row.is_staff.or(row.is_admin).unwrap_or(false),
        is_superuser: row.is_superuser.or(row.is_admin).unwrap_or(false),
        is_verified: row.is_verified.unwrap_or(true),
        date_joined: row.date_joined.or(row.created_at).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        last_login: row.last_login,
        groups: groups.into_iter().collect(),
        profile: profile(row.id, row.profile.as_ref(), warnings),
    })
}

/// Empty strings become null; a value that breaks a rule is left out with a warning.
fn profile(id: i64, raw: Option<&DjangoProfile>, warnings: &mut Vec<Warning>) -> Option<Profile> {
    let raw = raw?;
    let mut kept = |field: &'static str, value: Option<&str>, parse: fn(&str) -> Result<String, user::ProfileRule>| {
        let value = value.map(str::trim).filter(|v| !v.is_empty())?;
        parse(value).map_err(|rule| warnings.push(Warning { id, field, problem: rule.to_string() })).ok()
    };
    let phone = kept("profile.phone", raw.phone.as_deref(), |raw| {
        user::parse_phone(&raw.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect::<String>())
    });
    let gender = kept("profile.gender", raw.gender.as_deref(), user::parse_gender);
    let bio = kept("profile.bio", raw.bio.as_deref(), user::parse_bio).unwrap_or_default();
    Some(Profile { phone, gender, bio })
}

/// The import use case: plans the rows, then writes them in batches.
#[derive(Clone)]
pub struct ImportService {
    pub store: Arc<dyn ImportStore>,
    pub hasher: Arc<dyn PasswordHasher>,
}

impl std::fmt::Debug for ImportService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportService").finish_non_exhaustive()
    }
}

impl ImportService {
    /// Imports what `tables` holds; `progress` hears the rows written so far
    /// after each batch. A failed batch stops the import: the batches before
    /// it stay, nothing of it does.
    pub async fn run(
        &self,
        tables: DjangoTables,
        now: OffsetDateTime,
        dry_run: bool,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<ImportReport, PortError> {
        let rows = tables.users.len();
        let plan = plan(tables.users, |hash| self.hasher.check_format(&PasswordHash::new(hash)));
        let mut report = ImportReport {
            user_table: tables.user_table,
            profile_table: tables.profile_table,
            rows,
            groups: tables.groups.len(),
            skipped: plan.skipped,
            warnings: plan.warnings,
            dry_run,
            ..ImportReport::default()
        };
        let total = plan.users.len();
        let mut done = 0;
        for batch in plan.users.chunks(BATCH_SIZE) {
            let written = self.store.import_batch(batch, &tables.groups, now, dry_run).await?;
            for (user, outcome) in batch.iter().zip(written) {
                match outcome {
                    Written::Added => report.added += 1,
                    Written::Updated { password_kept } => {
                        report.updated += 1;
                        report.passwords_kept += usize::from(password_kept);
                    }
                    Written::Skipped(reason) => {
                        let (id, email) = (Some(user.id.get()), Some(user.email.to_string()));
                        report.skipped.push(Skipped { id, email, reason });
                        continue;
                    }
                }
                report.profiles += usize::from(user.profile.is_some());
            }
            done += batch.len();
            progress(done, total);
        }
        report.skipped.sort_by_key(|s| s.id);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, email: &str) -> DjangoUser {
        DjangoUser {
            id,
            email: Some(email.into()),
            password: Some("pbkdf2_sha256$1000000$salt$hash".into()),
            ..DjangoUser::default()
        }
    }

    fn any_hash(_: &str) -> Result<(), String> {
        Ok(())
    }

    fn reasons(plan: &Plan) -> Vec<(Option<i64>, &'static str)> {
        plan.skipped.iter().map(|s| (s.id, s.reason.code())).collect()
    }

    #[test]
    fn addresses_that_make_no_account_are_skipped_and_case_twins_are_never_merged() {
        let rows = vec![
            Ok(row(1, "")),
            Ok(row(2, "not-an-address")),
            Ok(row(3, "Ada@Example.com")),
            Ok(row(4, "ada@example.com")),
            Ok(row(5, "grace@example.com")),
            Err(UnreadableRow { id: Some(6), problem: "is_active \"maybe\" is not a boolean".into() }),
        ];
        let plan = plan(rows, any_hash);
        assert_eq!(
            reasons(&plan),
            [
                (Some(1), "empty_email"),
                (Some(2), "invalid_email"),
                (Some(6), "unreadable_row"),
                (Some(3), "email_case_collision"),
                (Some(4), "email_case_collision")
            ]
        );
        assert_eq!(plan.skipped[3].reason, SkipReason::EmailCaseCollision { with: vec![4] });
        assert_eq!(plan.users.iter().map(|u| u.id.get()).collect::<Vec<_>>(), [5]);
    }

    #[test]
    fn custom_models_map_by_column_name() {
        let mut custom = row(7, "maya@example.com");
        custom.name = Some("Maya Admin".into());
        custom.is_admin = Some(true);
        custom.created_at = Some(OffsetDateTime::UNIX_EPOCH + time::Duration::days(1));
        custom.groups = vec!["Editors".into()];
        let plan = plan(vec![Ok(custom)], any_hash);
        let user = &plan.users[0];
        assert_eq!((user.first_name.as_str(), user.last_name.as_str()), ("Maya Admin", ""));
        assert!(user.is_staff && user.is_superuser && user.is_active && user.is_verified);
        assert_eq!(user.date_joined, OffsetDateTime::UNIX_EPOCH + time::Duration::days(1));
        assert_eq!(user.groups, ["Editors", REGULAR_USER_GROUP]);
        assert!(user.profile.is_none());
    }

    #[test]
    fn profile_values_that_break_the_rules_are_left_out_with_a_warning() {
        let mut user = row(8, "kim@example.com");
        user.profile = Some(DjangoProfile {
            phone: Some("+44 (20) 7946-0958".into()),
            gender: Some("x".repeat(33)),
            bio: Some(String::new()),
        });
        let mut bad_phone = row(9, "lee@example.com");
        bad_phone.profile =
            Some(DjangoProfile { phone: Some("010-1234-5678".into()), gender: Some(" ".into()), bio: None });
        let plan = plan(vec![Ok(user), Ok(bad_phone)], any_hash);
        let first = plan.users[0].profile.clone().unwrap();
        assert_eq!((first.phone.as_deref(), first.gender, first.bio.as_str()), (Some("+442079460958"), None, ""));
        assert_eq!(plan.users[1].profile, Some(Profile::default()));
        let warned: Vec<_> = plan.warnings.iter().map(|w| (w.id, w.field)).collect();
        assert_eq!(warned, [(8, "profile.gender"), (9, "profile.phone")]);
    }

    #[test]
    fn a_malformed_hash_or_a_field_past_its_limit_skips_the_row() {
        let mut long_name = row(10, "long@example.com");
        long_name.first_name = Some("n".repeat(151));
        long_name.password = Some("fine".into());
        let mut nul = row(11, "nul@example.com");
        nul.last_name = Some("a\0b".into());
        nul.password = Some("fine".into());
        let mut empty_password = row(12, "sso@example.com");
        empty_password.password = Some(String::new());
        let rows = vec![Ok(row(13, "bad@example.com")), Ok(long_name), Ok(nul), Ok(empty_password)];
        let plan = plan(rows, |hash| if hash == "fine" { Ok(()) } else { Err("too costly".into()) });
        assert_eq!(
            reasons(&plan),
            [(Some(13), "malformed_password_hash"), (Some(10), "invalid_field"), (Some(11), "invalid_field")]
        );
        assert!(plan.users[0].password_hash.is_none(), "an empty password is no password");
    }

    #[tokio::test]
    async fn the_service_writes_in_batches_and_reports_the_stores_skips() {
        let rows: Vec<_> =
            (1..=BATCH_SIZE as i64 + 3).map(|id| Ok(row(id, &format!("user{id}@example.com")))).collect();
        let mut store = MockImportStore::new();
        store.expect_import_batch().times(2).returning(|users, _, _, _| {
            Ok(users
                .iter()
                .map(|u| match u.id.get() {
                    1 => Written::Skipped(SkipReason::IdTaken),
                    2 => Written::Updated { password_kept: true },
                    _ => Written::Added,
                })
                .collect())
        });
        let mut hasher = crate::ports::MockPasswordHasher::new();
        hasher.expect_check_format().returning(|_| Ok(()));
        let service = ImportService { store: Arc::new(store), hasher: Arc::new(hasher) };
        let tables = DjangoTables { user_table: "auth_user".into(), users: rows, ..DjangoTables::default() };
        let mut batches = Vec::new();
        let report =
            service.run(tables, OffsetDateTime::UNIX_EPOCH, false, |done, total| batches.push((done, total))).await;
        let report = report.unwrap();
        assert_eq!((report.added, report.updated, report.passwords_kept), (BATCH_SIZE + 1, 1, 1));
        assert_eq!(reasons_of(&report), [(Some(1), "id_taken")]);
        assert_eq!(batches, [(BATCH_SIZE, BATCH_SIZE + 3), (BATCH_SIZE + 3, BATCH_SIZE + 3)]);
    }

    fn reasons_of(report: &ImportReport) -> Vec<(Option<i64>, &'static str)> {
        report.skipped.iter().map(|s| (s.id, s.reason.code())).collect()
    }
}
