//! `api`: serves the REST API; `api create-user` adds a user from a shell. Settings come
//! from the environment or `.env` (`api --help`).

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use api::settings::Settings;
use chrono::Utc;
use clap::{Parser, Subcommand};
use common::domain::Role;
use common::storage::{NewUser, Storage};

#[derive(Debug, Parser)]
#[command(name = "api", version, about = "threatmon's REST API")]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Create a user; the password is read from standard input (prompted on a terminal).
    CreateUser {
        /// Letters, digits and @/./+/-/_.
        #[arg(long)]
        username: String,
        /// Email address.
        #[arg(long, default_value = "")]
        email: String,
        /// ADMIN or ANALYST.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
}

fn parse_role(value: &str) -> Result<Role, String> {
    value
        .to_ascii_uppercase()
        .parse::<Role>()
        .map_err(|_| "expected ADMIN or ANALYST".to_owned())
}

fn read_password() -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        rpassword::prompt_password("password: ").map_err(|e| e.to_string())
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

async fn create_user(
    settings: &Settings,
    username: String,
    email: String,
    role: Role,
) -> Result<(), String> {
    let password = read_password()?;
    api::auth::check_password_policy(&password, &username).map_err(|e| e.to_string())?;
    let storage = Storage::connect_and_migrate(&settings.connections.database_url)
        .await
        .map_err(|e| format!("DATABASE_URL: {e}"))?;
    let passwords = api::auth::Passwords::new(1).map_err(|e| e.to_string())?;
    let password_hash = passwords.hash(&password).await.map_err(|e| e.to_string())?;
    let user = NewUser {
        username,
        email,
        password_hash,
        role,
        is_active: true,
    };
    let user = storage
        .create_user(&user, Utc::now())
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "created user {} (id {}, {})",
        user.username, user.id, user.role
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = common::config::load("api");
    common::telemetry::init("info");
    match cli.command.unwrap_or(Command::Serve) {
        Command::CreateUser {
            username,
            email,
            role,
        } => match create_user(&cli.settings, username, email, role).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("api create-user: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Serve => {
            let shutdown = common::shutdown::on_signal();
            let app = match api::Application::build(cli.settings).await {
                Ok(app) => app,
                Err(err) => {
                    // One line naming the setting, with every cause after it.
                    eprintln!("api: {}", common::telemetry::error_chain(&err));
                    return ExitCode::FAILURE;
                }
            };
            match app.run(shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("api: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
