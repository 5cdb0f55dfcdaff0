//! `shoal`: the command-line interface.
//!
//! A thin binary over the library crates: it parses arguments, calls into
//! `shoal-store` / `shoal-core`, and renders results for people (tables,
//! progress bars on stderr) or programs (`--json`). Every error is printed as one
//! line on stderr with a non-zero exit code.

mod cli;
mod commands;
mod output;
mod p2p;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<commands::AlreadyReported>() => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line: what failed, on what, and (from the
/// innermost error) what to do. Library errors often already include their
/// source's text, so a cause whose text is already shown is not repeated.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace(['\n', '\r'], " ")
}
