//! The `gatehouse` command line: serve, migrate, create-superuser.

use std::io::{BufRead, IsTerminal};

use clap::{Parser, Subcommand};
use gatehouse_domain::{Email, Password};

use crate::config::Settings;
use crate::startup::{services, Application, StartupError, Stores};

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
    }
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
    let (auth, _, _) = services(&settings, &stores)?;
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
