//! The `strata` command: argument parsing, settings, printing and exit codes. All image logic
//! lives in the library crates; this crate only wires them together and prints.

#[macro_use]
mod output;
mod cli;
mod cmd;
mod config;
mod help;
mod open;
mod progress;
mod resolve;
mod terminal;

use clap::Parser;

use crate::cli::{Cli, Command};

/// Exit codes: 0 success, 1 operation failed, 2 usage error (clap's).
const EXIT_FAILURE: i32 = 1;

fn main() {
    // RUN steps re-execute this binary as their sandbox helper: that copy must take over
    // before anything else runs (it has to be single-threaded).
    strata_sandbox::init_if_requested();
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    // ring for TLS: reqwest's default provider (aws-lc-rs) seeds its RNG with CPU jitter
    // entropy on first use, ~25 ms of CPU, which was most of a copy that finds everything
    // present. Only fails when a provider is installed already, which is then kept.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(run(cli));
    if let Err(e) = result {
        if output::is_closed_stdout(&e) {
            std::process::exit(output::EXIT_BROKEN_PIPE);
        }
        output::print_error(&e);
        std::process::exit(cmd::build::exit_code(&e).unwrap_or(EXIT_FAILURE));
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    config::init()?;
    match cli.command {
        Command::Build(a) => cmd::build::run(*a).await,
        Command::Copy(a) => cmd::copy::run(a).await,
        Command::Inspect(a) => cmd::inspect::run(a).await,
        Command::Tags(a) => cmd::tags::run(a).await,
        Command::Ls(a) => cmd::ls::run(a).await,
        Command::Manifest(c) => cmd::manifest::run(c).await,
        Command::Login(a) => cmd::login::login(a).await,
        Command::Logout(a) => cmd::login::logout(a).await,
        Command::Rm(a) => cmd::rm::run(a).await,
        Command::Gc(a) => cmd::ls::gc(a).await,
        Command::Prune(a) => cmd::build::prune(a).await,
        Command::Unpack(a) => cmd::unpack::run(a).await,
        Command::Repack(a) => cmd::repack::run(a).await,
        Command::Mount(a) => cmd::mount::mount(a).await,
        Command::Umount(a) => cmd::mount::umount(a).await,
        Command::Config(a) => cmd::config::run(a).await,
        Command::Completion(a) => cmd::completion::completion(a),
        Command::Man(a) => cmd::completion::man(a),
    }
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
