//! The `keygate` command line (docs/control-plane.md, "Command line"). Errors go to standard error with a
//! non-zero exit code; output meant for scripts (a token) goes alone to standard output.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::auth::Role;
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::accounts::{self, CreateAdmin, CreateToken};
use crate::ids::{AdminId, TokenId};
use crate::keyring::Keyring;
use crate::startup::{open_database, Application};

/// Keygate control plane. No `Debug`: `scan --token` holds a token.
#[derive(Parser)]
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

#[derive(Args)]
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

#[derive(Subcommand)]
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
        /// The control plane's base URL (http:// or https://), for --revoke.
        #[arg(long, env = "KEYGATE_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an admin; the password is prompted for without echo on a terminal, else read
    /// from standard input (first line).
    Create {
        /// Email address.
        #[arg(long)]
        email: String,
        /// owner, admin, viewer or edge.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// List the admins: id, email, role, created at.
    List,
    /// Delete an admin; their sessions end at once. The last owner cannot be deleted.
    Delete {
        /// The admin's id (adm_...) or email.
        admin: String,
    },
    /// Change an admin's role; their sessions end at once. The last owner cannot be demoted.
    SetRole {
        /// The admin's id (adm_...) or email.
        admin: String,
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
    /// List the admin API tokens: id, name, role, created at, last used.
    List,
    /// Delete an admin API token; it stops working at once.
    Delete {
        /// The token's id (tok_...).
        token_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum SigningKeyCommand {
    /// Make a new active signing key; the previous one stays published as retiring.
    Rotate {
        /// Days the previous key stays listed as retiring (0: retired at once, for a
        /// compromised key).
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

/// The database of an admin command: it must exist already. Only `serve` and `migrate` create
/// one, so that a mistyped `--data-dir` or a missing `DATABASE_URL` is an error rather than a
/// new, empty SQLite file with one admin in it.
fn open_existing(common: &Common) -> anyhow::Result<crate::db::Pool> {
    let c = config(common);
    let target = crate::db::DbTarget::from_config(c.database_url.as_deref(), &c.data_dir)?;
    if let crate::db::DbTarget::Sqlite(path) = &target {
        if !path.is_file() {
            anyhow::bail!(
                "no database at {}: run `keygate migrate` (or `keygate serve`) first, or point --data-dir / DATABASE_URL at the existing one",
                path.display()
            );
        }
    }
    open_database(&c)
}

/// An admin's id from an id or an email.
fn admin_id(conn: &mut crate::db::DbConn, admin: &str) -> anyhow::Result<AdminId> {
    if admin.starts_with("adm_") {
        return Ok(AdminId::new(admin));
    }
    let list = accounts::list_admins(conn).map_err(|e| anyhow::anyhow!("{e}"))?;
    let email = admin.trim().to_lowercase();
    list.items
        .into_iter()
        .find(|a| a.email == email)
        .map(|a| a.id)
        .ok_or_else(|| anyhow::anyhow!("no admin with email {email:?}"))
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
            let postgres = c.database_url.is_some();
            // Absolute, so that the printed command works from any folder.
            let data_dir = std::path::absolute(&c.data_dir).unwrap_or_else(|_| c.data_dir.clone());
            actix_web::rt::System::new().block_on(async move {
                let app = Application::build(c).await?;
                let pool = app.state().pool.clone();
                let no_admin = actix_web::web::block(move || -> anyhow::Result<bool> {
                    let list = accounts::list_admins(&mut *pool.get()?)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    Ok(list.items.is_empty())
                })
                .await;
                // The hint is a courtesy: a failed look-up leaves it out rather than stop serve.
                let no_admin = matches!(no_admin, Ok(Ok(true)));
                // Plain lines on standard error: standard output carries the JSON log.
                eprintln!(
                    "{}",
                    serve_banner(
                        app.local_addr(),
                        no_admin.then_some((data_dir.as_path(), postgres))
                    )
                );
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
            accounts::check_email(&email).map_err(|e| anyhow::anyhow!("{e}"))?;
            let pool = open_existing(&cli.common)?;
            let password = read_password()?;
            accounts::check_password(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
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
        Command::Admin {
            command: AdminCommand::List,
        } => {
            let pool = open_existing(&cli.common)?;
            let list =
                accounts::list_admins(&mut *pool.get()?).map_err(|e| anyhow::anyhow!("{e}"))?;
            for a in list.items {
                println!(
                    "{} {} {} {}",
                    a.id,
                    a.email,
                    a.role.as_str(),
                    crate::timefmt::format_ms(a.created_at)
                );
            }
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::Delete { admin },
        } => {
            let pool = open_existing(&cli.common)?;
            let mut conn = pool.get()?;
            let id = admin_id(&mut conn, &admin)?;
            accounts::delete_admin(&mut conn, clock.now_ms(), "cli", &id)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!("deleted admin {id}; their sessions have ended");
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::SetRole { admin, role },
        } => {
            let pool = open_existing(&cli.common)?;
            let mut conn = pool.get()?;
            let id = admin_id(&mut conn, &admin)?;
            let view = accounts::update_admin(
                &mut conn,
                clock.now_ms(),
                "cli",
                &id,
                accounts::UpdateAdmin { role },
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "admin {} <{}> now has role {}; their sessions have ended",
                view.id,
                view.email,
                view.role.as_str()
            );
            Ok(())
        }
        Command::Token {
            command: TokenCommand::List,
        } => {
            let pool = open_existing(&cli.common)?;
            let list =
                accounts::list_tokens(&mut *pool.get()?).map_err(|e| anyhow::anyhow!("{e}"))?;
            for t in list.items {
                println!(
                    "{} {} {} {} {}",
                    t.id,
                    t.role.as_str(),
                    crate::timefmt::format_ms(t.created_at),
                    t.last_used_at
                        .map_or_else(|| "never".to_owned(), crate::timefmt::format_ms),
                    t.name
                );
            }
            Ok(())
        }
        Command::Token {
            command: TokenCommand::Delete { token_id },
        } => {
            let pool = open_existing(&cli.common)?;
            let token_id = TokenId::new(token_id);
            accounts::delete_token(&mut *pool.get()?, clock.now_ms(), "cli", &token_id)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "deleted token {token_id}; it stops working within a second on every control plane"
            );
            Ok(())
        }
        Command::Token {
            command: TokenCommand::Create { name, role },
        } => {
            let pool = open_existing(&cli.common)?;
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
            let retire_ms = i64::from(retire_after_days) * 86_400_000;
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

/// What `serve` prints once it listens: the console's URL and, while there is no admin, the
/// command that creates the first one (`first_admin`: the data dir, and whether the database
/// is PostgreSQL).
pub fn serve_banner(
    addr: std::net::SocketAddr,
    first_admin: Option<(&std::path::Path, bool)>,
) -> String {
    // A wildcard address is not one a browser can open: show loopback on the same port.
    let shown = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    };
    let mut out = format!("Keygate is listening on {addr}\nConsole: http://{shown}/console/");
    if let Some((data_dir, postgres)) = first_admin {
        out.push_str(
            "\nNo admin exists yet. Create the first one (the password is asked for, or read from standard input):\n  ",
        );
        if postgres {
            out.push_str("keygate admin create --email you@example.com --role owner\n(with the same DATABASE_URL as this server)");
        } else {
            out.push_str(&format!(
                "keygate --data-dir {} admin create --email you@example.com --role owner",
                shell_quote(&data_dir.display().to_string())
            ));
        }
    }
    out
}

/// `s` as one shell word: as is when it is plainly safe, else single-quoted.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:=@+,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The new admin's password: prompted for twice without echo on a terminal, else the first
/// line of standard input (scripts pipe it).
fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = rpassword::prompt_password("password: ")?;
        let again = rpassword::prompt_password("password again: ")?;
        if first != again {
            anyhow::bail!("the two passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.is_empty() {
        anyhow::bail!("no password on standard input");
    }
    Ok(password)
}
