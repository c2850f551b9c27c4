//! The `edgecascade` command line. See `edgecascade --help`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
