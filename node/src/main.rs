//! `tally`: the Tally node and wallet.

fn main() -> std::process::ExitCode {
    tally_node::cli::main()
}
