//! The `cordon` command line: serve the gateway, mint development tokens, explain decisions, check
//! and test policies, verify audit stores.

mod audit_cmd;
mod dev;
mod explain;
mod policy_cmd;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// glibc malloc was ~10% of the request path's CPU (many small, short-lived allocations across
// threads); mimalloc's per-thread free lists make those cheap. See docs/PERFORMANCE.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "cordon", version, about = "A residency gateway for AI workloads")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by commands that read the data dir.
#[derive(clap::Args, Clone)]
pub struct DataDir {
    /// Where keys and (by default) audit stores live.
    #[arg(long, env = "CORDON_DATA_DIR", default_value = "cordon-data")]
    pub data_dir: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (with no --config: the built-in quickstart policy).
    Serve(serve::Args),
    /// Mint a development token for the quickstart's built-in issuer.
    Token(dev::TokenArgs),
    /// Show the decision for a model and an identity, and every reason, without sending anything.
    Explain(explain::Args),
    /// Check or test a policy.
    #[command(subcommand)]
    Policy(policy_cmd::Command),
    /// Verify and inspect audit stores.
    #[command(subcommand)]
    Audit(audit_cmd::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORDON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // No colour codes when stderr is a file or a pipe.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Token(a) => dev::token(a),
        Command::Explain(a) => explain::run(a),
        Command::Policy(c) => policy_cmd::run(c),
        Command::Audit(c) => audit_cmd::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
