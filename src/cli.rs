//! The `guichet` command line: `serve` (the default), `check`, `schema`, and the store and
//! usage commands.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::auth::keys::KeyFiles;
use crate::config::{Config, Overrides};
use crate::logs::{self, LogFormat};
use crate::manage::{self, KeysCommand, UsersCommand};
use crate::openapi::publish::{merge_now, report_now};
use crate::render::{self, Loaded};

#[derive(Parser)]
#[command(
    name = "guichet",
    version,
    about = "Guichet, the API gateway of the Hackitech platform"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve(ServeArgs),
    /// Check the configuration, print every error, and exit 1 if there is any.
    Check(CheckArgs),
    /// Manage users in the configured store.
    Users {
        #[arg(long, default_value = "gateway.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Manage API keys in the configured store.
    Keys {
        #[arg(long, default_value = "gateway.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the merged OpenAPI document of the gateway and its services.
    Schema {
        #[arg(long, default_value = "gateway.yaml")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = SchemaFormat::Yaml)]
        format: SchemaFormat,
    },
    /// Print the argon2id hash of the password read from standard input (for `seed:`).
    HashPassword,
    /// Print the cluster-wide usage statistics of the Redis store.
    Usage {
        #[arg(long, default_value = "gateway.yaml")]
        config: PathBuf,
        /// 1h, 24h or 7d.
        #[arg(long, default_value = "1h")]
        window: String,
        #[arg(long)]
        consumer: Option<String>,
        #[arg(long)]
        route: Option<String>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// The gateway configuration file.
    #[arg(long, default_value = "gateway.yaml")]
    config: PathBuf,
    /// Public listener address, instead of `listen:`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin listener address, instead of `admin_listen:`.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// TLS listener address, instead of `tls.listen:` (gateway.yaml must have `tls:`).
    #[arg(long)]
    tls_listen: Option<SocketAddr>,
    /// Log lines as human-readable text or as one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Take the listening sockets over from the running gateway: start this, then send the
    /// running one SIGQUIT within 5 seconds.
    #[arg(long)]
    upgrade: bool,
    /// Where to write the process id, instead of `pid_file:`.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// The socket the listeners are handed over on, instead of `upgrade_socket:`.
    #[arg(long)]
    upgrade_socket: Option<PathBuf>,
}

#[derive(Args)]
struct CheckArgs {
    /// The gateway configuration file.
    #[arg(long, default_value = "gateway.yaml")]
    config: PathBuf,
    /// Fail (exit 1) on warnings too: TLS (a certificate expiring soon, an upstream not
    /// verified), documentation drift and unmerged fragment parts.
    #[arg(long)]
    strict: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SchemaFormat {
    Yaml,
    Json,
}

/// Parses the arguments and runs the command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve(args),
        Command::Check(args) => check(&args.config, args.strict),
        Command::Schema { config, format } => manage(&config, |c| {
            Box::pin(async move {
                let published = merge_now(c).await;
                for problem in &published.problems {
                    eprintln!("warning: {problem}");
                }
                let body = match format {
                    SchemaFormat::Yaml => published.yaml,
                    SchemaFormat::Json => published.json,
                };
                Ok(String::from_utf8_lossy(&body).trim_end().to_string())
            })
        }),
        Command::Users { config, command } => {
            manage(&config, |c| Box::pin(manage::users(c, command)))
        }
        Command::Keys { config, command } => {
            manage(&config, |c| Box::pin(manage::keys(c, command)))
        }
        Command::Usage {
            config,
            window,
            consumer,
            route,
        } => manage(&config, |c| {
            Box::pin(async move {
                manage::usage(c, &window, consumer.as_deref(), route.as_deref()).await
            })
        }),
        Command::HashPassword => match manage::read_password() {
            Ok(password) => {
                print_line(&crate::auth::password::hash(&password));
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("{message}");
                ExitCode::FAILURE
            }
        },
    }
}

type Managed<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + 'a>>;

/// Runs a store command on the configuration at `path` and prints its outcome.
fn manage(path: &Path, command: impl for<'a> FnOnce(&'a Config) -> Managed<'a>) -> ExitCode {
    let Some(Loaded { config, .. }) = load_or_report(path) else {
        return ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command(&config)) {
        Ok(output) => {
            print_line(&output);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Writes a line to standard output; a reader that went away (`| head -1`) is not an error.
fn print_line(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// The configuration, its token keys checked (not created), its store URL and TLS files checked.
fn load_or_report(path: &Path) -> Option<Loaded> {
    match render::load(path, KeyFiles::ReadOnly) {
        Ok(loaded) => Some(loaded),
        Err(errors) => {
            eprintln!("{errors}");
            None
        }
    }
}

fn check(path: &Path, strict: bool) -> ExitCode {
    let Some(Loaded {
        config,
        warnings: load_warnings,
        ..
    }) = load_or_report(path)
    else {
        return ExitCode::FAILURE;
    };
    for warning in &load_warnings {
        eprintln!("warning: {warning}");
    }
    let unsafe_paths = crate::lifecycle::RuntimeFiles::inspect(
        config.pid_file.as_deref(),
        config.upgrade_socket.as_deref(),
    );
    if !unsafe_paths.is_empty() {
        for problem in unsafe_paths {
            eprintln!(
                "{}: {problem}; `serve` refuses it: name a folder only the gateway's user can \
                 write, such as /run/guichet/",
                path.display()
            );
        }
        return ExitCode::FAILURE;
    }
    print_line(&format!(
        "{}: ok, {} services, {} routes",
        path.display(),
        config.services.len(),
        config.routes.len()
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(runtime) = runtime else {
        eprintln!("cannot start a runtime to load the OpenAPI fragments");
        return ExitCode::FAILURE;
    };
    let (problems, drift) = runtime.block_on(report_now(&config));
    for problem in &problems {
        eprintln!("warning: {problem}");
    }
    for drift in &drift {
        eprintln!("warning: drift: {drift}");
    }
    let warnings = load_warnings.len() + problems.len() + drift.len();
    print_line(&format!(
        "API document: {} problems, {} drift",
        problems.len(),
        drift.len()
    ));
    if strict && warnings > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    logs::init(args.log_format);
    let Loaded {
        mut config,
        tokens,
        foreign,
        tls,
        warnings,
    } = match render::load(&args.config, KeyFiles::CreateMissing) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let overrides = Overrides {
        listen: args.listen,
        admin_listen: args.admin_listen,
        tls_listen: args.tls_listen,
        pid_file: args.pid_file,
        upgrade_socket: args.upgrade_socket,
    };
    if overrides.tls_listen.is_some() && config.tls.is_none() {
        eprintln!(
            "--tls-listen: {} has no `tls:` section, so there is no TLS listener to move (add one with its certificates)",
            args.config.display()
        );
        return ExitCode::FAILURE;
    }
    overrides.apply(&mut config);
    if let Err(message) = crate::config::distinct_listeners(&config) {
        eprintln!("{message}");
        return ExitCode::FAILURE;
    }
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    match crate::server::serve(config, tokens, foreign, tls, overrides, args.upgrade) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}
