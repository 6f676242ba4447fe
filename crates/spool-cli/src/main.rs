//! `spool`: one binary for running and operating Spool.

mod log_tools;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "spool", version, about = "Spool: a distributed commit log", long_about = None)]
struct Cli {
    /// Log filter for diagnostics on stderr (for example `info` or `spool_log=debug`).
    #[arg(long, global = true, env = "SPOOL_LOG", default_value = "warn")]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect and check partition log directories offline (the node need not run).
    Log {
        #[command(subcommand)]
        command: log_tools::LogCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log_level))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Log { command } => log_tools::run(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
