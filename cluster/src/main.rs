fn main() -> std::process::ExitCode {
    nodewright_cluster::cli::main()
}
