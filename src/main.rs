//! The `leadgate` command line: run | import | validate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use leadgate::config::{self, Settings};
use leadgate::import::{ImportOptions, import};
use leadgate::sources::file::Format;

// glibc's allocator spends most of a backfill in malloc/free when events are built on one thread
// and freed on the journal writer's; mimalloc doubles the MySQL backfill (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "leadgate",
    version,
    about = "Lead-ingestion gateway: sources -> clean -> identity -> assign -> Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (webhooks, pipeline, output) until Ctrl-C or SIGTERM.
    Run {
        /// Settings file (TOML). Without it: 127.0.0.1:8080, ./data, one `webform` webhook, embedded output.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address, overriding the settings.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Data directory, overriding the settings.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run a CSV or JSON-lines file through the pipeline.
    Import {
        file: PathBuf,
        /// Input format; guessed from the extension when absent.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// A spreadsheet's sheet, by name (default: the first).
        #[arg(long)]
        sheet: Option<String>,
        /// Connector name the leads are attributed to (its mapping applies if configured).
        #[arg(long, default_value = "import")]
        source: String,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Publish nothing; write the records that would be published instead.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: the file for the records, `-` for stdout (the default).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Publish a file that was imported to its end once more (under the same event ids).
        /// An import that stopped part-way needs no flag: running it again goes on after the
        /// last row delivered.
        #[arg(long)]
        again: bool,
        /// Import through a running gateway at this address (`http://host:8080`): the file is
        /// uploaded to `POST /v1/imports` and followed to its end; the API token comes from
        /// `LEADGATE_API_TOKEN`.
        #[arg(long)]
        server: Option<String>,
    },
    /// Check a settings file and list every error with its place.
    Validate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Authorize a connector with its platform (OAuth): prints the page to grant access on,
    /// takes the code it sends back, exchanges it and stores the tokens where the gateway finds
    /// them (a running gateway uses them within 2 seconds).
    Auth {
        /// The connector's name.
        connector: String,
        #[arg(long)]
        config: Option<PathBuf>,
        /// The gateway's data directory (default: the settings').
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The code, or the whole address the platform sent the browser back to; asked for
        /// when absent.
        #[arg(long, conflicts_with = "token")]
        code: Option<String>,
        /// Instead of a code: a short-lived token to exchange for a lasting one (Meta: a user
        /// token from the Graph API Explorer, exchanged for a long-lived one and the page's).
        #[arg(long)]
        token: Option<String>,
    },
    /// Print a topic of the embedded output, one JSON record per line (records sealed with
    /// `[privacy] encryption_key` are opened with the configured keys).
    Output {
        /// The topic, e.g. `leads.clean`.
        topic: String,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The Kafka output's dead letters of the topic instead (`<data_dir>/dead-letter/`).
        #[arg(long)]
        dead_letter: bool,
    },
}

/// `leadgate output`.
fn output(
    topic: &str,
    config: Option<&PathBuf>,
    data_dir: Option<PathBuf>,
    dead_letter: bool,
) -> ExitCode {
    use std::io::{BufRead, Write};
    let settings = match load(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Err(e) = settings.privacy.install() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let dir = data_dir
        .unwrap_or(settings.data_dir.clone())
        .join(if dead_letter { "dead-letter" } else { "output" });
    let path = dir.join(format!("{topic}.jsonl"));
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut failed = 0;
    for (n, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
        let line = match line {
            Ok(l) if l.is_empty() => continue,
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::from(1);
            }
        };
        match leadgate::sinks::spool_record(&line) {
            Ok(v) => {
                if writeln!(out, "{v}").is_err() {
                    return ExitCode::SUCCESS; // the reader went away (`| head`)
                }
            }
            Err(e) => {
                eprintln!("{}: line {}: {e}", path.display(), n + 1);
                failed += 1;
            }
        }
    }
    let _ = out.flush();
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn load(path: Option<&PathBuf>) -> Result<Settings, ExitCode> {
    config::load(path.map(PathBuf::as_path)).map_err(|errors| {
        eprintln!("{errors}");
        eprintln!("{} error(s) in the configuration", errors.0.len());
        ExitCode::from(2)
    })
}

/// What `leadgate auth` was given: a code (or nothing: asked for), or a token to exchange.
enum Given {
    Code(Option<String>),
    Token(String),
}

/// `leadgate auth`.
fn auth(
    runtime: &tokio::runtime::Runtime,
    connector: &str,
    config: Option<&PathBuf>,
    data_dir: Option<PathBuf>,
    given: Given,
) -> ExitCode {
    use leadgate::sources::oauth;
    let settings = match load(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let data_dir = data_dir.unwrap_or(settings.data_dir.clone());
    let Some(c) = settings.connectors.iter().find(|c| c.name() == connector) else {
        eprintln!("error: no connector named `{connector}` in the settings");
        return ExitCode::from(2);
    };
    let Some(flow) = c.get().authorization() else {
        eprintln!(
            "error: connector `{connector}` ({}) has no OAuth authorization here: its type has none, or its app id and secret are not set",
            c.kind()
        );
        return ExitCode::from(2);
    };
    if let Err(e) = settings.privacy.install() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let store = oauth::store_of(&data_dir, connector);
    let client = match leadgate::sources::pull::api_client(std::time::Duration::from_secs(30)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match given {
        Given::Token(token) => {
            let stored = runtime.block_on(oauth::authorize_token(
                &store,
                flow.as_ref(),
                &client,
                token.trim(),
            ));
            return stored_tokens(connector, &store, stored);
        }
        Given::Code(code) => code,
    };
    let state = uuid::Uuid::now_v7().simple().to_string();
    println!(
        "Open this page, grant access, then paste the code (or the whole address you are sent back to):\n\n  {}\n",
        flow.authorize_url(&state)
    );
    let pasted = match code {
        Some(c) => c,
        None => {
            eprint!("code: ");
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("error: cannot read the code");
                return ExitCode::from(2);
            }
            line
        }
    };
    let Some(code) = oauth::code_of(&pasted, flow.code_param()) else {
        eprintln!("error: no code in what was pasted");
        return ExitCode::from(2);
    };
    let stored = runtime.block_on(oauth::authorize(&store, flow.as_ref(), &client, &code));
    stored_tokens(connector, &store, stored)
}

/// Reports what `leadgate auth` stored.
fn stored_tokens(
    connector: &str,
    store: &leadgate::sources::oauth::TokenStore,
    stored: Result<leadgate::sources::oauth::TokenSet, String>,
) -> ExitCode {
    match stored {
        Ok(set) => {
            let expires = set
                .access_expires_at
                .and_then(|s| jiff::Timestamp::from_second(s).ok())
                .map_or_else(|| "at no stated time".to_owned(), |t| t.to_string());
            println!(
                "stored new tokens for `{connector}` in {} (the access token expires {expires}); a running gateway uses them within 2 seconds",
                store.path().display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error: text, or one JSON object a line with `LEADGATE_LOG_FORMAT=json` (for
/// log shippers; the same fields, no PII either way). `LEADGATE_LOG` is the filter.
fn init_logs() {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEADGATE_LOG")
                .unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr on a full disk) is dropped: the subscriber
        // would otherwise report it with `eprintln!`, which panics, in whichever task logged.
        .log_internal_errors(false);
    match std::env::var("LEADGATE_LOG_FORMAT").as_deref() {
        Ok("json") => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        Ok("text") | Err(_) => builder.init(),
        Ok(other) => {
            builder.init();
            tracing::warn!(
                format = other,
                "LEADGATE_LOG_FORMAT is `json` or `text`; logging text"
            );
        }
    }
}

fn main() -> ExitCode {
    init_logs();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Auth {
            connector,
            config,
            data_dir,
            code,
            token,
        } => {
            let given = match token {
                Some(t) => Given::Token(t),
                None => Given::Code(code),
            };
            return auth(&runtime, &connector, config.as_ref(), data_dir, given);
        }
        Command::Output {
            topic,
            config,
            data_dir,
            dead_letter,
        } => return output(&topic, config.as_ref(), data_dir, dead_letter),
        Command::Validate { config } => {
            return match load(config.as_ref()) {
                Ok(s) => {
                    if let config::OutputSettings::Kafka(k) = &s.output
                        && let Err(e) = leadgate::sinks::check_kafka(k)
                    {
                        let source =
                            config.map_or("built-in default".into(), |p| p.display().to_string());
                        eprintln!("{source}: field `output.options`: {e}");
                        eprintln!("1 error(s) in the configuration");
                        return ExitCode::from(2);
                    }
                    let source =
                        config.map_or("built-in default".into(), |p| p.display().to_string());
                    println!("{source}: ok ({} connector(s))", s.connectors.len());
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            };
        }
        Command::Run {
            config,
            listen,
            data_dir,
        } => {
            let mut settings = match load(config.as_ref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            settings.listen = listen.unwrap_or(settings.listen);
            settings.data_dir = data_dir.unwrap_or(settings.data_dir);
            if let Some(why) = settings.open_management_api() {
                eprintln!("error: {why}");
                return ExitCode::from(2);
            }
            runtime.block_on(leadgate::app::run(
                settings,
                leadgate::app::shutdown_signal(),
            ))
        }
        Command::Import {
            file,
            format,
            sheet,
            source,
            config,
            data_dir,
            dry_run,
            output,
            again,
            server,
        } => {
            let offline_only = dry_run || output.is_some() || again;
            let opts = ImportOptions {
                file,
                again,
                format,
                sheet,
                source,
                dry_run,
                output,
            };
            if let Some(server) = server {
                if offline_only || config.is_some() || data_dir.is_some() {
                    eprintln!(
                        "error: --server imports through the gateway, with its settings: --dry-run, --output, --again, --config and --data-dir do not go with it"
                    );
                    return ExitCode::from(2);
                }
                let token = std::env::var("LEADGATE_API_TOKEN").ok();
                runtime
                    .block_on(leadgate::import::import_remote(
                        &server,
                        token.as_deref(),
                        &opts,
                    ))
                    .map(|_| ())
            } else {
                let mut settings = match load(config.as_ref()) {
                    Ok(s) => s,
                    Err(code) => return code,
                };
                settings.data_dir = data_dir.unwrap_or(settings.data_dir);
                runtime.block_on(import(settings, opts)).map(|_| ())
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
