//! The `rhel-node-agent` binary: parse the command line, set up logging, run, map to an exit code.

use clap::Parser;

fn main() {
    let cli = rhel_node_agent::cli::Cli::parse();
    let level = match cli.global.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RNA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let code = rhel_node_agent::cli::run(cli);
    std::process::exit(code as i32);
}
