//! The `jobsmith` binary: parses the command line and runs it; see the library docs.

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = jobsmith_cli::Cli::parse();
    let mut out = std::io::stdout();
    match jobsmith_cli::run(cli, &mut out).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", jobsmith_cli::Error::report(&e));
            ExitCode::FAILURE
        }
    }
}
