/// The agent allocates small strings for every exchange; mimalloc does that at a fraction of
/// glibc malloc's cost (malloc and free were ~16% of the pipeline's CPU in profiles).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    monitor::alloc::configure();
    monitor::cli::main()
}
