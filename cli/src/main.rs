//! `tally`: the Tally node, wallet, devnet and benchmark.

fn main() -> std::process::ExitCode {
    tally_cli::cli::main()
}
