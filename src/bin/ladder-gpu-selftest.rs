//! `ladder-gpu-selftest`: the GPU checks of issue 4, as one binary that needs no
//! FFmpeg library (built with `--no-default-features`) and loads every NVIDIA library
//! at run time. `make test-gpu` builds and runs it; `make gpu-selftest-bundle` puts it
//! beside the reference YUV files for carrying to a GPU machine (docs/GPU-TESTS.md).
//!
//! Prints the GPU probe, then one `PASS`/`FAIL`/`SKIP` line per check. Exit status: 1
//! when any check failed, 0 otherwise (all skipped included: no GPU here), 2 on a usage
//! error.
//!
//! Usage: `ladder-gpu-selftest [--yuv DIR]` (DIR: reference `<fixture>.yuv` files for
//! a PSNR on mismatch; default: `yuv/` beside the binary, when present).

use std::path::PathBuf;
use std::process::ExitCode;

use ladder::pipeline::gpu::driver::{CurrentContext, Driver};
use ladder::pipeline::gpu::probe::{self, GpuInventory};
use ladder::pipeline::gpu::selftest::{self, Env};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut yuv_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("yuv")))
        .filter(|d| d.is_dir());
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--yuv", Some(dir)) => yuv_dir = Some(PathBuf::from(dir)),
            _ => {
                eprintln!("usage: ladder-gpu-selftest [--yuv DIR]");
                return ExitCode::from(2);
            }
        }
    }

    let inventory = probe::probe();
    print_probe(&inventory);
    match &yuv_dir {
        Some(d) => println!("reference YUV: {}", d.display()),
        None => println!("reference YUV: none (no PSNR on mismatch)"),
    }

    // The probe never panics; Driver::init only runs cudarc once libcuda loaded.
    let checks = match (&inventory.no_gpu, Driver::init()) {
        (None, Ok(driver)) => match driver.primary_context(0) {
            Ok(primary) => match primary.make_current() {
                Ok(current) => run(Ok(&current), yuv_dir),
                Err(e) => run(Err(format!("GPU 0: {e}")), yuv_dir),
            },
            Err(e) => run(Err(format!("GPU 0: {e}")), yuv_dir),
        },
        (Some(why), _) => run(Err(why.clone()), yuv_dir),
        (None, Err(e)) => run(Err(e.to_string()), yuv_dir),
    };
    for c in &checks {
        println!("{c}");
    }
    let (pass, fail, skip) = checks.iter().fold((0, 0, 0), |(p, f, s), c| {
        use selftest::Outcome::*;
        match c.outcome {
            Pass(_) => (p + 1, f, s),
            Fail(_) => (p, f + 1, s),
            Skip(_) => (p, f, s + 1),
        }
    });
    println!("{pass} passed, {fail} failed, {skip} skipped");
    if skip == checks.len() {
        println!("GPU tests skipped: nothing here to run them on (exit 0)");
    }
    ExitCode::from(selftest::exit_code(&checks) as u8)
}

fn run(gpu: Result<&CurrentContext<'_>, String>, yuv_dir: Option<PathBuf>) -> Vec<selftest::Check> {
    selftest::run_all(&Env { gpu, yuv_dir })
}

fn print_probe(inv: &GpuInventory) {
    match &inv.driver {
        Some(d) => println!(
            "driver: {} (CUDA {}, NVENC API {})",
            d.version.as_deref().unwrap_or("version unknown"),
            d.cuda_version,
            d.nvenc_api_version.as_deref().unwrap_or("none")
        ),
        None => println!(
            "driver: none: {}{}",
            inv.no_gpu.as_deref().unwrap_or("unknown"),
            inv.no_gpu_detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ),
    }
    for g in &inv.gpus {
        println!(
            "GPU {}: {} ({} MiB, compute {}, {}), NVDEC {}, NVENC {}",
            g.index,
            g.name,
            g.memory_bytes >> 20,
            g.compute_capability,
            g.pci_bus_id,
            if g.has_nvdec() { "H.264" } else { "no" },
            if g.has_nvenc() { "H.264" } else { "no" },
        );
    }
}
