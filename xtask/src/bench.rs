//! Benchmarks (filled in below).
use anyhow::Result;

pub fn run() -> Result<()> {
    anyhow::bail!("benchmarks not written yet")
}
