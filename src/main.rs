//! The `killrvideo-users` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    killrvideo_users::cli::main()
}
