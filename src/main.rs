//! The `killrvideo-users` binary: everything lives in the library.

// mimalloc rather than the system allocator: glibc's malloc/free/consolidate were about
// a tenth of the service's CPU under load (docs/performance.md, "What mattered").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    killrvideo_users::cli::main()
}
