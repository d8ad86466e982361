//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) and every input a
//! fuzzer ever found crashing (`fuzz/artifacts/<target>/`, kept once fixed)
//! through the same functions the cargo-fuzz targets call, on stable Rust:
//! a parser that regresses on any of them fails `make test`. Running the
//! fuzzers themselves: fuzz/README.md.

use std::path::{Path, PathBuf};

use ladder::fuzzing::{run, Target};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every target has a corpus folder with seeds in it, and every folder
/// under fuzz/corpus is a target (a renamed target cannot leave its corpus
/// unreplayed).
#[test]
fn every_target_has_a_corpus_and_every_corpus_a_target() {
    for t in Target::ALL {
        let n = inputs(&root().join("corpus").join(t.name())).len();
        assert!(n > 0, "fuzz/corpus/{} is empty or missing", t.name());
    }
    for kind in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root().join(kind)) else {
            continue;
        };
        for e in entries {
            let name = e.expect("entry").file_name();
            let name = name.to_string_lossy();
            assert!(
                Target::from_name(&name).is_some(),
                "fuzz/{kind}/{name} is not a fuzz target"
            );
        }
    }
}

#[test]
fn the_corpus_replays_without_a_panic() {
    let mut total = 0;
    for t in Target::ALL {
        for kind in ["corpus", "artifacts"] {
            for file in inputs(&root().join(kind).join(t.name())) {
                let data = std::fs::read(&file).expect("read corpus file");
                let result = std::panic::catch_unwind(|| run(t, &data));
                assert!(
                    result.is_ok(),
                    "{} panicked on {}",
                    t.name(),
                    file.display()
                );
                total += 1;
            }
        }
    }
    eprintln!("replayed {total} inputs");
}
