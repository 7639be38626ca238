//! The `edgewise` command: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    edgewise_host::cli::main()
}
