//! Parse, run, print one error line, exit 0/1/2 (SPEC §6).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = salesdwh::cli::Cli::parse(); // usage errors: clap prints and exits 2
    match salesdwh::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err((error, secrets)) => {
            eprintln!("salesdwh: error: {}", error.report(&secrets));
            ExitCode::from(error.exit_code())
        }
    }
}
