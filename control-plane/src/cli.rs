//! The `keygate` command line (contract section 5). Errors go to standard error with a
//! non-zero exit code; output meant for scripts (a token) goes alone to standard output.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::auth::Role;
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::accounts::{self, CreateAdmin, CreateToken};
use crate::keyring::{Keyring, DEFAULT_RETIRE_AFTER_MS};
use crate::startup::{open_database, Application};

/// Keygate control plane.
#[derive(Debug, Parser)]
#[command(
    name = "keygate",
    version,
    about = "Keygate control plane: API keys, signed snapshots, admin tools"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Common {
    /// Holds the SQLite database, the snapshot signing keys and the session secret.
    #[arg(
        long,
        global = true,
        env = "KEYGATE_DATA_DIR",
        default_value = "./keygate-data"
    )]
    data_dir: PathBuf,
    /// A postgres:// URL for PostgreSQL; unset for the embedded SQLite file in the data dir.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the control plane (applies pending migrations first).
    Serve {
        /// Listen address.
        #[arg(long, env = "KEYGATE_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Apply pending database migrations.
    Migrate,
    /// Manage admin accounts.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Manage admin API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage the snapshot signing keys.
    SigningKey {
        #[command(subcommand)]
        command: SigningKeyCommand,
    },
    /// Find Keygate keys in files and folders. Prints `file:line: <key start>…` per key; exit
    /// code 0 when none is found, 1 when some are, 2 on errors.
    Scan {
        /// Files and folders (recursive; .git, target, node_modules and binary files skipped).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Report the keys found to the control plane, which revokes the live ones.
        #[arg(long)]
        revoke: bool,
        /// Owner or admin API token, for --revoke.
        #[arg(long, env = "KEYGATE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The control plane's base URL (http:// only), for --revoke.
        #[arg(long, env = "KEYGATE_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an admin; the password is read from standard input (first line).
    Create {
        /// Email address.
        #[arg(long)]
        email: String,
        /// owner, admin, viewer or edge.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an admin API token and print it, alone on one line.
    Create {
        /// What the token is for.
        #[arg(long)]
        name: String,
        /// owner, admin, viewer or edge.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
}

#[derive(Debug, Subcommand)]
enum SigningKeyCommand {
    /// Make a new active signing key; the previous one stays published as retiring.
    Rotate {
        /// Days the previous key stays listed as retiring.
        #[arg(long, default_value_t = 7)]
        retire_after_days: u32,
    },
    /// List the active and retiring public keys.
    List,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("unknown role {s:?}: use owner, admin, viewer or edge"))
}

/// Parses the command line, runs the command, and maps errors to a message on standard error
/// and exit code 1.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Scan {
        paths,
        revoke,
        token,
        url,
    } = cli.command
    {
        return crate::scan::run(crate::scan::ScanOptions {
            paths,
            revoke,
            token,
            url,
        });
    }
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config(common: &Common) -> Config {
    let mut c = Config::new(&common.data_dir);
    c.database_url = common.database_url.clone();
    c
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    let clock = Clock::system();
    match cli.command {
        Command::Serve { listen } => {
            let json = std::env::var("KEYGATE_LOG_FORMAT").map_or(true, |v| v != "text");
            crate::telemetry::init(json, std::io::stdout);
            let mut c = config(&cli.common).apply_env()?;
            c.listen = listen;
            c.validate()?;
            actix_web::rt::System::new().block_on(async move {
                let app = Application::build(c).await?;
                app.run_until_stopped().await?;
                Ok(())
            })
        }
        Command::Migrate => {
            crate::telemetry::init(false, std::io::stderr);
            crate::files::ensure_private_dir(&cli.common.data_dir)?;
            let c = config(&cli.common);
            open_database(&c)?;
            Keyring::load_or_create(&c.data_dir)?;
            eprintln!("database is migrated");
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::Create { email, role },
        } => {
            let password = read_password()?;
            accounts::check_email(&email).map_err(|e| anyhow::anyhow!("{e}"))?;
            accounts::check_password(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
            crate::files::ensure_private_dir(&cli.common.data_dir)?;
            let pool = open_database(&config(&cli.common))?;
            let mut conn = pool.get()?;
            let admin = accounts::create_admin(
                &mut conn,
                clock.now_ms(),
                "cli",
                CreateAdmin {
                    email,
                    role,
                    password,
                },
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "created admin {} <{}> with role {}",
                admin.id,
                admin.email,
                admin.role.as_str()
            );
            Ok(())
        }
        Command::Token {
            command: TokenCommand::Create { name, role },
        } => {
            crate::files::ensure_private_dir(&cli.common.data_dir)?;
            let pool = open_database(&config(&cli.common))?;
            let mut conn = pool.get()?;
            let created = accounts::create_token(
                &mut conn,
                clock.now_ms(),
                "cli",
                CreateToken { name, role },
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "created token {} with role {} (shown once)",
                created.id,
                created.role.as_str()
            );
            println!("{}", created.token);
            Ok(())
        }
        Command::SigningKey {
            command: SigningKeyCommand::Rotate { retire_after_days },
        } => {
            let retire_ms = if retire_after_days == 0 {
                DEFAULT_RETIRE_AFTER_MS
            } else {
                i64::from(retire_after_days) * 86_400_000
            };
            let keyring = Keyring::rotate(&cli.common.data_dir, clock.now_ms(), retire_ms)?;
            let active = keyring.active();
            println!(
                "active signing key {} {}",
                active.key_id(),
                active.public_key_base64url()
            );
            eprintln!(
                "add this public key to every edge's trusted keys; running control planes pick it up within seconds"
            );
            Ok(())
        }
        Command::SigningKey {
            command: SigningKeyCommand::List,
        } => {
            let keyring = Keyring::load(&cli.common.data_dir)?;
            for k in keyring.public_keys(clock.now_ms()) {
                let status = if k.active {
                    "active".to_owned()
                } else {
                    format!(
                        "retiring until {}",
                        crate::timefmt::format_ms(k.retire_after_ms.unwrap_or(0))
                    )
                };
                println!("{} {} {}", k.key_id, k.public_key, status);
            }
            Ok(())
        }
        // Handled in `run`: it has its own exit codes.
        Command::Scan { .. } => Ok(()),
    }
}

fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password: ");
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        anyhow::bail!("no password on standard input");
    }
    Ok(password)
}
