//! The GPU self-test's vocabulary: what one check found. The checks live
//! beside what they test (decode, scaling, encode); the `ladder-gpu-selftest`
//! binary runs them on a machine with an NVIDIA GPU and prints one line each
//! (`make test-gpu`). A check that cannot run here says why (`Skip`); it
//! never passes for want of hardware.

use std::fmt;

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
    fn one_line_per_check() {
        let c = Check::new("nvdec/baseline", Outcome::Skip("no NVIDIA driver".into()));
        assert_eq!(c.to_string(), "SKIP nvdec/baseline: no NVIDIA driver");
        assert!(!c.failed());
        assert!(Check::new("x", Outcome::Fail("differs".into())).failed());
    }
}
