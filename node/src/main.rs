//! The `kpnode` binary: everything lives in the library.

/// mimalloc: a node allocates and frees many small buffers per certificate (frames, records,
/// documents) across threads; glibc's allocator spent about a fifth of the CPU time of
/// `kpnode bench` doing it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kp_node::cli::main()
}
