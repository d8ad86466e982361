//! The `ladder` command. Thin: parse arguments, load config, run.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {}
