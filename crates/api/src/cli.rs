//! The `gatehouse` command line: serve, migrate, create-superuser, keys, import-django.

use std::io::{BufRead, IsTerminal};

use clap::{Parser, Subcommand};
use gatehouse_django_source::{Options, SourceError};
use gatehouse_domain::import::{ImportReport, ImportService, BATCH_SIZE};
use gatehouse_domain::{Email, Password};

use crate::config::Settings;
use crate::startup::{services, Application, Services, StartupError, Stores};
use gatehouse_token_jwt::keys::{KeysFile, KeysFileError, SigningKey};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about = "Authentication and user accounts over a JSON API")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Make (or promote) a verified superuser in the Admin User group.
    CreateSuperuser {
        /// The superuser's email address.
        #[arg(long)]
        email: String,
        /// Read the password from the first line of standard input instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Manage the signing keys of EdDSA and RS256 (the keys file).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Copy a Django project's users, groups and profiles in, keeping ids and password hashes.
    ImportDjango {
        /// The Django database: postgres://… or sqlite://PATH (only read).
        #[arg(long, value_name = "URL")]
        from: String,
        /// The user table, when it is not the one table with email, password and last_login.
        #[arg(long, value_name = "TABLE")]
        user_table: Option<String>,
        /// The profile table, when it is not the one with user_id and phone, gender or bio.
        #[arg(long, value_name = "TABLE")]
        profile_table: Option<String>,
        /// Read and report what would be imported; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The careful rotation: `add`, wait past the JWKS cache age (300 s) so that
/// every verifier knows the new key, then `rotate`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Append a new key: published at once, not yet signing.
    Add,
    /// Make the newest key sign (adding one first when it already signs).
    Rotate,
    /// Remove the keys that stopped signing at least SECONDS ago.
    Prune {
        #[arg(long, value_name = "SECONDS")]
        older_than: u32,
    },
    /// Print every key: kid, algorithm, when it was made, whether it signs.
    List,
}

/// A failure of a command, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("{0}")]
    Input(String),
    #[error("the server stopped with an error: {0}")]
    Serve(#[from] std::io::Error),
    #[error("could not save the superuser: {0}")]
    Store(#[from] gatehouse_domain::PortError),
    #[error("cannot use the {0}")]
    Keys(#[from] KeysFileError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("the import stopped: {0}; the batches written before stay, nothing of the failed one does: run it again")]
    Import(gatehouse_domain::PortError),
}

pub async fn run(command: Command, settings: Settings) -> Result<(), CommandError> {
    match command {
        Command::Serve => {
            let app = Application::build(settings).await?;
            tracing::info!(port = app.port(), "serving");
            Ok(app.run_until_stopped().await?)
        }
        Command::Migrate => {
            Stores::open(&settings).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::CreateSuperuser { email, password_stdin } => create_superuser(settings, &email, password_stdin).await,
        Command::Keys(command) => keys(&settings, command),
        Command::ImportDjango { from, user_table, profile_table, dry_run } => {
            import_django(&settings, &from, Options { user_table, profile_table }, dry_run).await
        }
    }
}

/// Reads the Django database, imports it in batches and prints the summary;
/// fails when no user could be imported.
async fn import_django(settings: &Settings, from: &str, options: Options, dry_run: bool) -> Result<(), CommandError> {
    let tables = gatehouse_django_source::read(from, &options).await?;
    let stores = Stores::open(settings).await?;
    let Services { hasher, .. } = services(settings, &stores)?;
    let import = ImportService { store: stores.import.clone(), hasher };
    let progress = |done: usize, total: usize| {
        if total > BATCH_SIZE {
            eprintln!("written {done} of {total} users");
        }
    };
    let report =
        import.run(tables, OffsetDateTime::now_utc(), dry_run, progress).await.map_err(CommandError::Import)?;
    print!("{}", summary(&report));
    if report.imported() == 0 {
        return Err(CommandError::Input(format!("no user of {} could be imported", report.user_table)));
    }
    Ok(())
}

fn summary(report: &ImportReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let profile_table = report.profile_table.as_deref().unwrap_or("none");
    let _ = writeln!(out, "read {} users from {} (profile table: {profile_table})", report.rows, report.user_table);
    let _ = writeln!(
        out,
        "users imported: {} ({} added, {} updated; {} kept the password they have set in Gatehouse since)",
        report.imported(),
        report.added,
        report.updated,
        report.passwords_kept
    );
    let _ = writeln!(out, "groups: {}, profiles imported: {}", report.groups, report.profiles);
    let _ = writeln!(out, "skipped: {}", report.skipped.len());
    for skip in &report.skipped {
        let id = skip.id.map_or_else(|| "?".to_owned(), |id| id.to_string());
        let email = skip.email.as_deref().filter(|e| !e.is_empty()).unwrap_or("(no email)");
        let _ = writeln!(out, "  id {id} {email}: {} ({})", skip.reason.code(), skip.reason);
    }
    if !report.warnings.is_empty() {
        let _ = writeln!(out, "warnings: {}", report.warnings.len());
        for warning in &report.warnings {
            let _ = writeln!(out, "  id {} {}: {} (left out)", warning.id, warning.field, warning.problem);
        }
    }
    if report.dry_run {
        let _ = writeln!(out, "dry run: nothing was written");
    }
    out
}

/// Edits the keys file; running replicas follow it within 10 s.
fn keys(settings: &Settings, command: KeysCommand) -> Result<(), CommandError> {
    let Some(algorithm) = settings.jwt.algorithm.key_algorithm() else {
        return Err(CommandError::Input(
            "jwt.algorithm is HS256, which signs with a shared secret and has no keys: set it to EdDSA or RS256 \
             (GATEHOUSE__JWT__ALGORITHM) to manage signing keys"
                .into(),
        ));
    };
    let file = KeysFile::new(&settings.jwt.keys_file, algorithm);
    let now = OffsetDateTime::now_utc();
    match command {
        KeysCommand::Add => {
            let key = file.add(now)?;
            let signing = file.load()?.signing().kid == key.kid;
            if signing {
                println!("added {} ({}): the only key, so it signs", key.kid, key.algorithm);
            } else {
                println!(
                    "added {} ({}): published, not yet signing; run `gatehouse keys rotate` after 300 s",
                    key.kid, key.algorithm
                );
            }
        }
        KeysCommand::Rotate => {
            let key = file.rotate(now)?;
            println!("{} ({}) signs new tokens; the others still verify", key.kid, key.algorithm);
        }
        KeysCommand::Prune { older_than } => {
            let removed = file.prune(time::Duration::seconds(i64::from(older_than)), now)?;
            for key in &removed {
                println!("removed {} ({})", key.kid, key.algorithm);
            }
            if removed.is_empty() {
                println!("no key stopped signing {older_than} s ago or more");
            }
        }
        KeysCommand::List => {
            let ring = file.load()?;
            println!("{:<43}  {:<5}  {:<20}  signs", "kid", "alg", "created");
            for (index, key) in ring.keys().iter().enumerate() {
                println!(
                    "{:<43}  {:<5}  {:<20}  {}",
                    key.kid,
                    key.algorithm,
                    created(key),
                    if index == 0 { "yes" } else { "no" }
                );
            }
        }
    }
    Ok(())
}

fn created(key: &SigningKey) -> String {
    key.created.and_then(|at| at.format(&Rfc3339).ok()).unwrap_or_else(|| "-".into())
}

async fn create_superuser(settings: Settings, email: &str, password_stdin: bool) -> Result<(), CommandError> {
    let email = Email::parse(email).map_err(|e| CommandError::Input(format!("invalid --email: {e}")))?;
    let raw = if password_stdin { read_stdin_password()? } else { prompt_password()? };
    let personal = [email.as_ref(), email.local_part()];
    let password = Password::parse(&raw, &personal).map_err(|rules| {
        let reasons: Vec<String> = rules.iter().map(ToString::to_string).collect();
        CommandError::Input(format!("password refused: {}", reasons.join(" ")))
    })?;
    let stores = Stores::open(&settings).await?;
    let Services { auth, .. } = services(&settings, &stores)?;
    let user = auth.create_superuser(email, password).await?;
    println!("superuser {} (id {}) is ready", user.email, user.id);
    Ok(())
}

fn read_stdin_password() -> Result<String, CommandError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CommandError::Input(format!("cannot read standard input: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Asks twice on the terminal, without echo.
fn prompt_password() -> Result<String, CommandError> {
    if !std::io::stdin().is_terminal() {
        return Err(CommandError::Input("no terminal to ask for the password: pass --password-stdin".into()));
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt).map_err(|e| CommandError::Input(format!("cannot read the password: {e}")))
    };
    let first = ask("Password: ")?;
    let second = ask("Password (again): ")?;
    if first != second {
        return Err(CommandError::Input("the passwords do not match".into()));
    }
    Ok(first)
}
