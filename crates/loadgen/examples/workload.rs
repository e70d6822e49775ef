//! `concord workload` without the rest of `concord`: the same subcommands,
//! for trying the load generator against any PostgreSQL-protocol server.
//!
//! ```text
//! cargo run -p concord-loadgen --example workload -- init tpcc --warehouses 1 --url postgres://postgres@127.0.0.1:5432/postgres
//! cargo run -p concord-loadgen --example workload -- run tpcc --wait=false --duration 30s --url ...
//! cargo run -p concord-loadgen --example workload -- check tpcc --url ...
//! ```

use std::process::ExitCode;

use clap::Parser;
use concord_loadgen::WorkloadCommand;

/// Load generators and checkers for PostgreSQL-protocol servers.
#[derive(Parser)]
#[command(name = "workload")]
struct Cli {
    #[command(subcommand)]
    command: WorkloadCommand,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match concord_loadgen::run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
