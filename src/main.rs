//! The `rhel-node-agent` binary: parse the command line, set up logging, run, map to an exit code.

use clap::Parser;
use tracing_subscriber::prelude::*;

fn main() {
    let cli = rhel_node_agent::cli::Cli::parse();
    if !matches!(cli.command, rhel_node_agent::cli::Command::Daemon(_)) {
        // A client command piped into `head` should end quietly, like any Unix tool, instead of
        // panicking on EPIPE. (The daemon keeps Rust's default: SIGPIPE ignored.)
        // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    let level = match cli.global.verbose {
        0 if matches!(cli.command, rhel_node_agent::cli::Command::Daemon(_)) => "info",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RNA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Under systemd (JOURNAL_STREAM set) log to the journal with structured fields; else to stderr.
    let journald = std::env::var_os("JOURNAL_STREAM")
        .and_then(|_| tracing_journald::layer().ok())
        .map(|l| {
            l.with_field_prefix(None)
                .with_syslog_identifier("rhel-node-agent".into())
        });
    let registry = tracing_subscriber::registry().with(filter);
    match journald {
        Some(j) => registry.with(j).init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colours only for a person at a terminal, not in log files or Ansible output.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_target(false),
            )
            .init(),
    }
    let code = rhel_node_agent::cli::run(cli);
    std::process::exit(code as i32);
}
