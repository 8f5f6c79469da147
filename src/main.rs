//! The `pgplan` binary: everything happens in `pgplan::cli::run`.

fn main() -> std::process::ExitCode {
    pgplan::cli::run()
}
