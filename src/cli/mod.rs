//! The command line: clap definitions, global options, dispatch, and the mapping of every failure to
//! the exit codes of CLI.md (scripts and Ansible rely on them).

pub mod daemon;
pub mod demo;
pub mod docs;
pub mod firewall;
pub mod mirrors;
pub mod node;
pub mod phase;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit codes (CLI.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success, "already done", "skipped".
    Ok = 0,
    /// The operation failed, or a check/verify found a difference.
    Failed = 1,
    /// Usage error or invalid input; nothing was changed.
    Invalid = 2,
    /// Refused by an ownership or ordering rule.
    Refused = 3,
    /// The daemon could not be reached.
    Unreachable = 4,
}

/// A command failure: the one-line message and the exit code it maps to.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// Exit code.
    pub exit: Exit,
    /// `error: …` text (one line).
    pub message: String,
}

impl CliError {
    /// An invalid-input error (exit 2).
    pub fn invalid(e: impl std::fmt::Display) -> CliError {
        CliError {
            exit: Exit::Invalid,
            message: e.to_string(),
        }
    }
    /// A failure (exit 1).
    pub fn failed(e: impl std::fmt::Display) -> CliError {
        CliError {
            exit: Exit::Failed,
            message: e.to_string(),
        }
    }
    /// A refusal (exit 3).
    pub fn refused(e: impl std::fmt::Display) -> CliError {
        CliError {
            exit: Exit::Refused,
            message: e.to_string(),
        }
    }
}

/// `--version`: version, commit, build target and TLS implementation (support asks for them).
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RNA_BUILD_COMMIT"),
    ", target ",
    env!("RNA_BUILD_TARGET"),
    ", tls ",
    tls_backend!(),
    ")"
);

/// The Kubernetes client's TLS implementation in this build (the RHEL 8 and RHEL 9 packages
/// differ): a macro, because `concat!` takes only literals.
#[cfg(feature = "tls-openssl")]
macro_rules! tls_backend {
    () => {
        "openssl"
    };
}
#[cfg(all(feature = "tls-rustls", not(feature = "tls-openssl")))]
macro_rules! tls_backend {
    () => {
        "rustls"
    };
}
use tls_backend;
#[cfg(not(any(feature = "tls-openssl", feature = "tls-rustls")))]
compile_error!("build with the `tls-openssl` (default) or the `tls-rustls` feature");

/// The exit codes, for `--help` and the man page (scripts and Ansible rely on them).
const EXIT_CODES_HELP: &str = "Exit status:
  0  success; also \"already done\" and \"skipped: no cluster configured\"
  1  the operation failed, or (check/verify) a difference or problem was found
  2  usage error or invalid input (bad policy, bad config); nothing was changed
  3  refused: phase order, or an ownership rule (someone else's cordon, a file owned by the daemon)
  4  the daemon could not be reached (after --wait-daemon)

Files: /etc/rhel-node-agent/config.d/*.toml (settings; vendor defaults in
/usr/lib/rhel-node-agent/config.d/), /etc/rhel-node-agent/mirrors.d/ (mirror policies),
/etc/rhel-node-agent/hooks.d/<phase>.d/ (upgrade hooks), /var/lib/rhel-node-agent/ (state).
Documentation: /usr/share/doc/rhel-node-agent/.";

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// JSON with `"schema": 1`.
    Json,
}

/// rhel-node-agent: image mirrors, upgrade hooks, firewalld and readiness for RHEL worker nodes.
#[derive(Debug, Parser)]
#[command(name = "rhel-node-agent", version, long_version = LONG_VERSION, about, propagate_version = true,
    after_long_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Take every default path (config, policies, registries.conf, state, runtime dir) under DIR and
    /// never touch the host.
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The control socket.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// A D-Bus address to use as the system bus.
    #[arg(long, global = true, value_name = "ADDRESS")]
    pub system_bus: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Same as `-o json`.
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// An extra configuration fragment directory (applied last).
    #[arg(long, global = true, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
}

impl Global {
    /// The effective output format.
    pub fn format(&self) -> OutputFormat {
        if self.json {
            OutputFormat::Json
        } else {
            self.output
        }
    }
    /// The root directory (`/` by default).
    pub fn root(&self) -> PathBuf {
        self.root.clone().unwrap_or_else(|| PathBuf::from("/"))
    }
    /// Load the settings for these options.
    pub fn settings(&self) -> Result<crate::config::Settings, CliError> {
        crate::config::Settings::load(&self.root(), self.config_dir.as_deref())
            .map_err(CliError::invalid)
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render, apply, inspect and roll back image mirror policies in registries.conf.
    #[command(subcommand)]
    Mirrors(mirrors::MirrorsCommand),
    /// Run the mirror engine on an embedded example root (no cluster, no root privileges).
    Demo(demo::DemoArgs),
    /// Run the node agent daemon (what systemd starts).
    Daemon(daemon::DaemonArgs),
    /// Show the daemon's view of the node: mirrors, firewalld, upgrade phase, cluster.
    Status,
    /// Ask the daemon to reconcile now.
    Reconcile,
    /// Show or check the configuration.
    #[command(subcommand)]
    Config(daemon::ConfigCommand),
    /// Run an upgrade phase (pre-cordon, pre-upgrade, pre-uncordon, post-upgrade) through the daemon.
    #[command(subcommand)]
    Phase(phase::PhaseCommand),
    /// Show or reset the upgrade record.
    #[command(subcommand)]
    Upgrade(phase::UpgradeCommand),
    /// Show or apply firewalld's declared state (over D-Bus).
    #[command(subcommand)]
    Firewall(firewall::FirewallCommand),
    /// Cordon, uncordon or drain this node in the cluster (with ownership rules).
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Write the man pages and shell completions (used by the package build).
    #[command(hide = true)]
    GenerateDocs(docs::GenerateDocsArgs),
}

/// Run a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Exit {
    let result = match &cli.command {
        Command::Mirrors(cmd) => mirrors::run(cmd, &cli.global),
        Command::Demo(a) => demo::run(a, &cli.global),
        Command::Daemon(a) => daemon::daemon(a, &cli.global),
        Command::Status => daemon::status(&cli.global),
        Command::Reconcile => daemon::reconcile(&cli.global),
        Command::Config(c) => daemon::config(c, &cli.global),
        Command::Phase(c) => phase::run(c, &cli.global),
        Command::Upgrade(c) => phase::upgrade(c, &cli.global),
        Command::Firewall(c) => firewall::run(c, &cli.global),
        Command::Node(c) => node::run(c, &cli.global),
        Command::GenerateDocs(a) => docs::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message);
            e.exit
        }
    }
}
