//! The `kpnode` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    kp_node::cli::main()
}
