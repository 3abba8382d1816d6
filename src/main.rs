//! The `guichet` binary.

/// mimalloc instead of glibc's allocator: the request path allocates small, short-lived buffers
/// and header maps, where glibc's malloc showed as the largest user-space cost in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    guichet::cli::run()
}
