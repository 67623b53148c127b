//! The `icpgate` command line: serve, check, registry import|export, config check.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use icpgate::compliance::Format;
use icpgate::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "icpgate",
    version,
    about = "File first, then connect (先备案、后接入): an ICP filing gate"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gate.
    Serve {
        #[arg(long, default_value = "config/icpgate.toml")]
        config: PathBuf,
    },
    /// Compliance check: filing, ICP number, gate decision and (with --dns) where
    /// each domain points. Exit 0 all compliant, 1 some not, 2 error.
    Check {
        #[arg(long, default_value = "config/icpgate.toml")]
        config: PathBuf,
        /// Also resolve each domain and check it points at this access provider.
        #[arg(long)]
        dns: bool,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Read domains from FILE, one per line (`#` comments; `-` for stdin).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Domains to check (Unicode accepted).
        #[arg(required_unless_present = "file")]
        domains: Vec<String>,
    },
    /// Import or export filings as JSON Lines.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Validate a configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Import filings (all or nothing) from a JSON Lines file.
    Import {
        #[arg(long, default_value = "config/icpgate.toml")]
        config: PathBuf,
        file: PathBuf,
    },
    /// Export every filing as JSON Lines (`-` for standard output).
    Export {
        #[arg(long, default_value = "config/icpgate.toml")]
        config: PathBuf,
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate, and print the problem with its location.
    Check {
        #[arg(long, default_value = "config/icpgate.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("icpgate: {}", error_chain(&error));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, each said once: many of our errors already
/// carry their cause in their own message (an import's "line 3: …"), which anyhow's
/// `{:#}` would repeat after it.
fn error_chain(error: &anyhow::Error) -> String {
    let mut said = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !said.contains(&cause) {
            said.push_str(": ");
            said.push_str(&cause);
        }
    }
    said
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Threads of `serve`'s control runtime: the admin API, the registry, the change
/// feed, ACME and the background tasks. The data plane has threads of its own
/// (`limits.worker_threads`), so this side stays small.
const CONTROL_THREADS: usize = 2;

fn control_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(CONTROL_THREADS)
        .thread_name("icpgate-control")
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config } => {
            let loaded = Config::load(&config)?;
            init_logging(&loaded);
            control_runtime()?.block_on(icpgate::app::serve(&config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            config,
            dns,
            format,
            file,
            domains,
        } => {
            let loaded = Config::load(&config)?;
            let inputs = check_inputs(domains, file.as_deref())?;
            runtime()?.block_on(check(&loaded, &inputs, dns, format))
        }
        Command::Registry {
            command: RegistryCommand::Import { config, file },
        } => {
            let loaded = Config::load(&config)?;
            let count = runtime()?.block_on(import(&loaded, &file))?;
            println!("imported {count} filings from {}", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Registry {
            command: RegistryCommand::Export { config, file },
        } => {
            let loaded = Config::load(&config)?;
            let count = runtime()?.block_on(export(&loaded, &file))?;
            if file.as_os_str() != "-" {
                println!("exported {count} filings to {}", file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => {
            // The files the config names for admin tokens are checked too: a reload
            // would refuse them just the same.
            // So is the admin listener's exposure: on a non-loopback address it
            // needs a token, as `serve` would insist.
            let checked = Config::load(&config)
                .map_err(|e| e.to_string())
                .and_then(|loaded| {
                    use icpgate::admin::tokens::{check_exposure, LoadedTokens};
                    LoadedTokens::read(&loaded.admin)
                        .and_then(|tokens| check_exposure(loaded.listen.admin, &tokens))
                        .map_err(|e| e.to_string())
                });
            match checked {
                Ok(_) => {
                    println!("{}: ok", config.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    println!("{error}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// The domains given as arguments, then those of `--file`.
fn check_inputs(mut domains: Vec<String>, file: Option<&Path>) -> anyhow::Result<Vec<String>> {
    if let Some(file) = file {
        let text = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
        } else {
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the domain list {}", file.display()))?
        };
        domains.extend(icpgate::compliance::parse_list(&text));
    }
    anyhow::ensure!(!domains.is_empty(), "no domains to check");
    Ok(domains)
}

async fn check(
    config: &Config,
    inputs: &[String],
    dns: bool,
    format: Format,
) -> anyhow::Result<ExitCode> {
    use icpgate::compliance::{output, Checker};
    let registry = icpgate::registry::open_seeded(&config.registry, false).await?;
    let checker = Checker::new(registry, config, dns)?;
    let mut progress = output::Progress::new(inputs.len());
    let reports = checker
        .check_all(inputs, |done, total| progress.update(done, total))
        .await?;
    print!("{}", output::render(format, &reports, dns));
    Ok(if reports.iter().all(|r| r.compliant) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn import(config: &Config, file: &Path) -> anyhow::Result<usize> {
    let registry = icpgate::registry::open(&config.registry, false).await?;
    let progress = std::sync::Arc::new(icpgate::registry::ImportProgress::default());
    let bar = ImportBar::start(std::sync::Arc::clone(&progress));
    let imported = icpgate::registry::import_file_with(registry.as_ref(), file, &progress).await;
    bar.stop();
    Ok(imported?)
}

/// The progress bar of `registry import`, on stderr and only on a terminal (indicatif
/// draws nothing to a pipe or a file). A thread of its own redraws it from the
/// import's counters, which the reading thread and the registry move.
struct ImportBar {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ImportBar {
    fn start(progress: std::sync::Arc<icpgate::registry::ImportProgress>) -> ImportBar {
        use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
        use std::sync::atomic::Ordering::Relaxed;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{msg:8} [{bar:30}] {human_pos}/{human_len} ({elapsed})",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            let tick = std::time::Duration::from_millis(100);
            loop {
                // Reading runs a few batches ahead of storing: the bar shows what is
                // stored (in the open transaction), and says when reading is done.
                let lines = progress.lines.load(Relaxed);
                let parsed = progress.parsed.load(Relaxed);
                bar.set_length(lines as u64);
                bar.set_message(if parsed < lines {
                    "importing"
                } else {
                    "storing"
                });
                bar.set_position(progress.stored.load(Relaxed) as u64);
                if !matches!(
                    stopped.recv_timeout(tick),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                ) {
                    break;
                }
            }
            // The summary (or the error) printed next says how it ended.
            bar.finish_and_clear();
        });
        ImportBar { stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Export to `file` ("-": standard output), written as the filings are read. The
/// file is made readable by its owner only (0600): it holds personal data.
async fn export(config: &Config, file: &Path) -> anyhow::Result<usize> {
    use std::io::Write;
    let registry = icpgate::registry::open(&config.registry, false).await?;
    if file.as_os_str() == "-" {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let count = icpgate::registry::export_to(registry.as_ref(), &mut out).await?;
        out.flush().context("cannot write standard output")?;
        return Ok(count);
    }
    let cannot = || format!("cannot write {}", file.display());
    let created = {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(file)
            .and_then(|f| {
                // An existing file keeps its mode on open: narrow it too.
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                Ok(f)
            })
    };
    let mut out = std::io::BufWriter::new(created.with_context(cannot)?);
    let count = icpgate::registry::export_to(registry.as_ref(), &mut out)
        .await
        .with_context(cannot)?;
    out.flush().with_context(cannot)?;
    Ok(count)
}

/// Logs go to stderr: `[log] level` unless `RUST_LOG` is set; `format = "json"` writes
/// one flat JSON object per line (`timestamp`, `level`, `target`, `message` and the
/// event's fields at the top level, no span lists), which log shippers index as is.
/// Text lines are coloured only on a terminal: no escape codes in files or journald.
fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}
