fn main() -> anyhow::Result<()> {
    monitor::cli::main()
}
