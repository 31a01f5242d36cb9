//! The `kpnode` command line, built inside the test package so process-level tests run the
//! current code.

fn main() -> std::process::ExitCode {
    kp_node::cli::main()
}
