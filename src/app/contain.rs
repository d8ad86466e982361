//! Panic containment (issue 8 §5): a panic in one channel's work is caught
//! at that work's boundary, logged once with the channel's name and the
//! panic's message, and the channel restarts; the process and the other
//! channels go on.
//!
//! The boundaries:
//! - The publish session (`ingest::publish::Publish`): every call its
//!   driver (an RTMP connection's task, a pull's task) makes with media runs
//!   under [`catch`]. A panic there ends the session with `Stop::Panicked`:
//!   the publisher is disconnected (encoders reconnect on their own; a pull
//!   reconnects after its backoff) and the next session continues the
//!   playlists after a discontinuity, as any reconnect does.
//! - The transcoding pipeline's stage threads (`pipeline::graph`): each
//!   stage runs under [`catch`]; the sink hears of it
//!   (`RungSink::pipeline_panicked`: `app::RungWriter` logs it) and the
//!   publish session rebuilds the pipeline in place, behind a
//!   discontinuity in every rendition, at the next video frame.
//! - Anything else on a tokio task (the origin's connections, the admin
//!   API, restream destinations) is caught by tokio itself: that task ends,
//!   the process does not.
//!
//! Shared state survives a panic: every `Mutex` and `RwLock` that more than
//! one task or thread uses is locked with
//! `unwrap_or_else(PoisonError::into_inner)` (each critical section is a few
//! field writes; what a restart does not rebuild stays consistent).
//!
//! The process-wide hook ([`install_hook`], set by `app::run`) keeps quiet
//! about a panic that a boundary catches (the boundary logs it, naming the
//! channel, with the hook's location added to the message) and hands any
//! other panic to the standard hook.
//!
//! All of this needs `panic = "unwind"`, the default, which Cargo.toml
//! keeps (see the compile-time check below).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::task::Poll;

// Containment is unwinding: with `panic = "abort"` one channel's panic
// would take every channel down.
#[cfg(not(panic = "unwind"))]
compile_error!("ladder contains a channel's panic by unwinding: build with panic = \"unwind\"");

thread_local! {
    /// How many [`catch`] calls this thread is inside.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The hook's description of the panic a [`catch`] on this thread is
    /// about to return.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Install the process's panic hook (once; later calls do nothing): a panic
/// inside [`catch`] is described (message and location) for the boundary to
/// log, and printed nowhere else; any other goes to the standard hook.
pub fn install_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let standard = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let inside = DEPTH.try_with(Cell::get).unwrap_or(0) > 0;
            let kept = inside
                && CAUGHT
                    .try_with(|c| {
                        if let Ok(mut c) = c.try_borrow_mut() {
                            *c = Some(describe(info));
                        }
                    })
                    .is_ok();
            if !kept {
                standard(info);
            }
        }));
    });
}

/// Run `f`, catching a panic: `Err` with the panic's message (and, with
/// [`install_hook`], where it happened). What `f` touched may be half
/// changed: the caller discards or rebuilds it.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    /// Leaves the catch when dropped, however `f` ended.
    struct Inside;
    impl Drop for Inside {
        fn drop(&mut self) {
            let _ = DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    let _ = DEPTH.try_with(|d| d.set(d.get().saturating_add(1)));
    let inside = Inside;
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    drop(inside);
    result.map_err(|payload| {
        CAUGHT
            .try_with(|c| c.try_borrow_mut().ok().and_then(|mut c| c.take()))
            .ok()
            .flatten()
            .unwrap_or_else(|| message(payload.as_ref()))
    })
}

/// [`catch`] for a future: each poll runs under it, so a panic ends the
/// future with `Err` (its message) instead of ending the task that runs it;
/// the future is not polled again.
pub async fn catch_async<F: Future>(future: F) -> Result<F::Output, String> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| match catch(|| future.as_mut().poll(cx)) {
        Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(message) => Poll::Ready(Err(message)),
    })
    .await
}

/// A panic's message (`panic!`'s text), or a placeholder.
fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// `message (at file:line)`.
fn describe(info: &PanicHookInfo<'_>) -> String {
    let what = message(info.payload());
    match info.location() {
        Some(at) => format!("{what} (at {}:{})", at.file(), at.line()),
        None => what,
    }
}

/// The hidden environment variable that injects panics, **for tests only**
/// (tests/panic.rs): read once when `ladder serve` starts; not an operator
/// feature, never documented for users.
///
/// `<channel>:<stage>@<n>`, comma separated. `stage` is `ingest` (the publish
/// session, at its n-th video message), `decode` (the decode thread, at its
/// n-th access unit) or a rung's name (that rung's encode thread, at its n-th
/// picture). Each fires once in the process's life.
pub const TEST_PANIC_ENV: &str = "LADDER_TEST_PANIC";

/// One injected panic ([`TEST_PANIC_ENV`]).
#[derive(Debug)]
struct Injection {
    channel: String,
    stage: String,
    at: u64,
    fired: AtomicBool,
}

/// Panics to inject ([`TEST_PANIC_ENV`]); empty (the default) in every real
/// run. Cheap to clone: the entries, and whether each fired, are shared.
#[derive(Clone, Debug, Default)]
pub struct TestPanics(Vec<Arc<Injection>>);

impl PartialEq for TestPanics {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

impl TestPanics {
    /// From [`TEST_PANIC_ENV`]; `Err` names an entry that does not parse.
    pub fn from_env() -> Result<TestPanics, String> {
        match std::env::var(TEST_PANIC_ENV) {
            Ok(spec) => TestPanics::parse(&spec),
            Err(_) => Ok(TestPanics::default()),
        }
    }

    /// Parse `<channel>:<stage>@<n>[,...]`.
    pub fn parse(spec: &str) -> Result<TestPanics, String> {
        let mut list = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = entry.split_once(':').and_then(|(channel, rest)| {
                let (stage, at) = rest.split_once('@')?;
                let at = at.parse::<u64>().ok().filter(|n| *n > 0)?;
                (!channel.is_empty() && !stage.is_empty()).then(|| Injection {
                    channel: channel.to_owned(),
                    stage: stage.to_owned(),
                    at,
                    fired: AtomicBool::new(false),
                })
            });
            match parsed {
                Some(i) => list.push(Arc::new(i)),
                None => {
                    return Err(format!(
                        "{TEST_PANIC_ENV}: {entry:?} is not <channel>:<stage>@<n>"
                    ))
                }
            }
        }
        Ok(TestPanics(list))
    }

    /// None to inject.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ones for `channel`.
    pub fn for_channel(&self, channel: &str) -> TestPanics {
        TestPanics(
            self.0
                .iter()
                .filter(|i| i.channel == channel)
                .cloned()
                .collect(),
        )
    }

    /// Panic if an injection for `stage` is due at its `count`-th item and
    /// has not fired yet. Call only with [`TestPanics::for_channel`]'s.
    pub fn check(&self, stage: &str, count: u64) {
        for i in &self.0 {
            if i.stage == stage && count >= i.at && !i.fired.swap(true, Ordering::SeqCst) {
                panic!(
                    "panic injected by {TEST_PANIC_ENV} ({}:{}@{})",
                    i.channel, i.stage, i.at
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_returns_its_message_and_where_it_happened() {
        install_hook();
        let r: Result<(), String> = catch(|| panic!("boom {}", 7));
        let message = r.unwrap_err();
        assert!(message.starts_with("boom 7 (at "), "{message}");
        assert!(message.contains("contain.rs:"), "{message}");
        // nested: each catch gets its own panic
        let r = catch(|| {
            let inner: Result<(), String> = catch(|| panic!("inner"));
            assert!(inner.unwrap_err().starts_with("inner"));
            42
        });
        assert_eq!(r, Ok(42));
        assert_eq!(DEPTH.with(Cell::get), 0);
    }

    #[tokio::test]
    async fn a_future_that_panics_ends_with_its_message() {
        install_hook();
        let ok = catch_async(async {
            tokio::task::yield_now().await;
            7
        })
        .await;
        assert_eq!(ok, Ok(7));
        let failed: Result<(), String> = catch_async(async {
            tokio::task::yield_now().await;
            panic!("after a yield");
        })
        .await;
        assert!(failed.unwrap_err().starts_with("after a yield (at "));
    }

    #[test]
    fn injections_parse_and_fire_once_for_their_channel_and_stage() {
        let all = TestPanics::parse("a:720p@3, b:ingest@1").unwrap();
        assert!(TestPanics::parse("a:720p").is_err());
        assert!(TestPanics::parse("a:720p@0").is_err());
        assert!(TestPanics::parse(":x@1").is_err());
        assert!(TestPanics::parse("").unwrap().is_empty());
        let a = all.for_channel("a");
        a.check("720p", 2);
        a.check("ingest", 5);
        assert!(catch(|| a.check("720p", 3)).is_err());
        // once only
        a.check("720p", 4);
        assert!(all.for_channel("c").is_empty());
        assert!(catch(|| all.for_channel("b").check("ingest", 1)).is_err());
    }
}
