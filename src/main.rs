//! The `centinela` binary: parses arguments and hands over to [`centinela::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    centinela::cli::main(centinela::cli::Cli::parse())
}
