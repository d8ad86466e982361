//! The GPU self-test's vocabulary: what one check found. The checks live
//! beside what they test (decode, scaling, encode); the `ladder-gpu-selftest`
//! binary runs them on a machine with an NVIDIA GPU and prints one line each
//! (`make test-gpu`). A check that cannot run here says why (`Skip`); it
//! never passes for want of hardware.

use std::fmt;
use std::path::PathBuf;

use super::decode;
use super::driver::CurrentContext;

/// What the checks run on.
pub struct Env<'a> {
    /// GPU 0's primary context, current on this thread; or why there is none (no
    /// driver, no GPU), which every GPU check reports as its `Skip` reason.
    pub gpu: Result<&'a CurrentContext<'a>, String>,
    /// Where reference YUV files (`<fixture>.yuv`) are, for a PSNR on mismatch.
    pub yuv_dir: Option<PathBuf>,
}

impl<'a> Env<'a> {
    /// The context, or the reason there is none.
    pub fn context(&self) -> Result<&'a CurrentContext<'a>, &str> {
        self.gpu.as_ref().map(|c| *c).map_err(String::as_str)
    }
}

/// Every check, in order. Add a check function's results here (one line each).
pub fn run_all(env: &Env<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.extend(decode::check_bit_exact(env));
    checks.push(decode::check_errors_surfaced(env));
    checks.push(decode::check_sequence_change(env));
    // (these make their own CUDA context; with none here, the same reason)
    match env.context() {
        Ok(_) => {
            checks.extend(super::scale::selftest_checks());
            checks.extend(super::encode::selftest_checks());
            checks.push(super::hybrid::selftest_check(0));
            checks.push(super::device::selftest_check(0));
        }
        Err(why) => {
            for name in [
                "scale/cuda",
                "nvenc/h264-720p",
                "hybrid/ladder",
                "gpu/ladder",
            ] {
                checks.push(Check::new(name, Outcome::Skip(why.to_owned())));
            }
        }
    }
    checks
}

/// The process exit status for a run: 1 when any check failed, else 0 (a run where
/// everything was skipped exits 0; the binary says so).
pub fn exit_code(checks: &[Check]) -> i32 {
    i32::from(checks.iter().any(Check::failed))
}

/// What one check found.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// It ran and held; the text says what was compared.
    Pass(String),
    /// It ran and did not hold; the text says what differed.
    Fail(String),
    /// It could not run on this machine; the text says why.
    Skip(String),
}

/// One named check and its outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// Short and stable, e.g. `nvdec/high-bframes-bit-exact`.
    pub name: String,
    pub outcome: Outcome,
}

impl Check {
    pub fn new(name: impl Into<String>, outcome: Outcome) -> Check {
        Check {
            name: name.into(),
            outcome,
        }
    }

    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Fail(_))
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (word, text) = match &self.outcome {
            Outcome::Pass(t) => ("PASS", t),
            Outcome::Fail(t) => ("FAIL", t),
            Outcome::Skip(t) => ("SKIP", t),
        };
        write!(f, "{word} {}: {text}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_gpu_every_check_skips_with_the_reason() {
        let env = Env {
            gpu: Err("no NVIDIA driver (libcuda.so.1 not found)".into()),
            yuv_dir: None,
        };
        let checks = run_all(&env);
        assert!(checks.len() >= 6, "{checks:?}");
        for c in &checks {
            assert_eq!(
                c.outcome,
                Outcome::Skip("no NVIDIA driver (libcuda.so.1 not found)".into()),
                "{}",
                c.name
            );
        }
        for name in [
            "nvdec/high-bframes-bit-exact",
            "scale/cuda",
            "nvenc/h264-720p",
        ] {
            assert!(checks.iter().any(|c| c.name == name), "{name}");
        }
        assert_eq!(exit_code(&checks), 0);
        let mut failed = checks.clone();
        failed.push(Check::new("x", Outcome::Fail("differs".into())));
        assert_eq!(exit_code(&failed), 1);
    }

    #[test]
    fn one_line_per_check() {
        let c = Check::new("nvdec/baseline", Outcome::Skip("no NVIDIA driver".into()));
        assert_eq!(c.to_string(), "SKIP nvdec/baseline: no NVIDIA driver");
        assert!(!c.failed());
        assert!(Check::new("x", Outcome::Fail("differs".into())).failed());
    }
}
