//! `threatctl`: threatmon from a shell. Everything is in the library (`cli`).

fn main() -> std::process::ExitCode {
    cli::main()
}
