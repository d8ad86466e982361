//! Response bodies.
//!
//! - [`parts`]: a finished object (complete segment, part, init, manifest) sent
//!   from the store's own buffers: no copy, exact length, so HTTP/1.1 gets a
//!   `Content-Length` and HTTP/2 an `END_STREAM` on the last DATA frame.
//! - [`growing`]: a segment still being written (LL-DASH chunked delivery,
//!   DASH-IF low-latency modes). It sends the parts already in the store, then
//!   each new part as soon as the packager adds it, one data frame per CMAF chunk
//!   (one chunk of HTTP/1.1 chunked transfer coding, RFC 9112 §7.1; one or more
//!   DATA frames with HTTP/2), and ends when the segment is complete.
//!
//! A growing body that cannot be finished (the publisher stalled, the segment
//! left the store before this reader caught up, the origin is shutting down)
//! ends with an error, never with a clean end: hyper then closes the HTTP/1.1
//! connection without the last-chunk or resets the HTTP/2 stream, which is how a
//! CDN knows the object is truncated and must not be cached. A clean end always
//! means the whole segment was sent, so the immutable cache policy is right for
//! the growing response too.

use super::OriginError;
use crate::packaging::store::ChannelStore;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Every response body the origin sends.
pub type OriginBody = UnsyncBoxBody<Bytes, OriginError>;

/// An empty body.
pub fn empty() -> OriginBody {
    http_body_util::Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// One buffer.
pub fn full(data: impl Into<Bytes>) -> OriginBody {
    http_body_util::Full::new(data.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// Buffers sent back to back, with an exact length.
pub fn parts(parts: Vec<Bytes>) -> OriginBody {
    let remaining = parts.iter().map(|b| b.len() as u64).sum();
    PartsBody {
        parts: parts.into_iter().filter(|b| !b.is_empty()).collect(),
        remaining,
    }
    .boxed_unsync()
}

struct PartsBody {
    parts: VecDeque<Bytes>,
    remaining: u64,
}

impl Body for PartsBody {
    type Data = Bytes;
    type Error = OriginError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, OriginError>>> {
        let next = self.parts.pop_front();
        if let Some(b) = &next {
            self.remaining = self.remaining.saturating_sub(b.len() as u64);
        }
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Follows one segment of one track in the store.
pub struct Follower {
    pub store: Arc<ChannelStore>,
    /// Track id (not index: indices move when tracks are added).
    pub track: String,
    pub msn: u64,
    /// Subscribed before the first look at the store, so no change is missed.
    pub changes: watch::Receiver<u64>,
    /// `true` once the origin shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Longest wait for the next part before the body is cut.
    pub stall: Duration,
    sent: usize,
    queue: VecDeque<Bytes>,
    complete: bool,
    stall_deadline: Instant,
}

impl Follower {
    pub fn new(
        store: Arc<ChannelStore>,
        track: String,
        msn: u64,
        changes: watch::Receiver<u64>,
        shutdown: watch::Receiver<bool>,
        stall: Duration,
    ) -> Self {
        Follower {
            store,
            track,
            msn,
            changes,
            shutdown,
            stall,
            sent: 0,
            queue: VecDeque::new(),
            complete: false,
            stall_deadline: Instant::now() + stall,
        }
    }

    /// Copy out (by reference count) the parts not sent yet.
    fn look(&mut self) -> Result<(), OriginError> {
        self.changes.borrow_and_update();
        let state = self.store.read();
        let segment = state
            .track(&self.track)
            .and_then(|t| t.segment(self.msn))
            .ok_or_else(|| OriginError::SegmentEvicted {
                channel: self.store.name.clone(),
                track: self.track.clone(),
                msn: self.msn,
            })?;
        if let Some(new) = segment.parts.get(self.sent..) {
            if !new.is_empty() {
                self.queue.extend(new.iter().map(|p| p.data.clone()));
                self.sent = segment.parts.len();
                self.stall_deadline = Instant::now() + self.stall;
            }
        }
        self.complete = segment.complete;
        Ok(())
    }

    /// The next part's bytes; `None` once the segment is complete and sent.
    async fn next(&mut self) -> Option<Result<Bytes, OriginError>> {
        loop {
            if let Some(b) = self.queue.pop_front() {
                return Some(Ok(b));
            }
            if self.complete {
                return None;
            }
            if let Err(e) = self.look() {
                return Some(Err(e));
            }
            if !self.queue.is_empty() || self.complete {
                continue;
            }
            tokio::select! {
                r = self.changes.changed() => {
                    if r.is_err() {
                        return Some(Err(OriginError::ShuttingDown));
                    }
                }
                _ = tokio::time::sleep_until(self.stall_deadline) => {
                    return Some(Err(OriginError::SegmentStalled {
                        channel: self.store.name.clone(),
                        track: self.track.clone(),
                        msn: self.msn,
                    }));
                }
                _ = self.shutdown.wait_for(|stop| *stop) => {
                    return Some(Err(OriginError::ShuttingDown));
                }
            }
        }
    }

    async fn next_owned(mut self) -> (Self, Option<Result<Bytes, OriginError>>) {
        let item = self.next().await;
        (self, item)
    }
}

type Step = Pin<Box<dyn Future<Output = (Follower, Option<Result<Bytes, OriginError>>)> + Send>>;

/// The body of a segment being written: one data frame per part.
pub struct GrowingBody {
    step: Option<Step>,
}

/// The body of a segment being written, following it with `follower`.
pub fn growing(follower: Follower) -> OriginBody {
    GrowingBody {
        step: Some(Box::pin(follower.next_owned())),
    }
    .boxed_unsync()
}

impl Body for GrowingBody {
    type Data = Bytes;
    type Error = OriginError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, OriginError>>> {
        let Some(step) = self.step.as_mut() else {
            return Poll::Ready(None);
        };
        let (follower, item) = ready!(step.as_mut().poll(cx));
        match item {
            Some(Ok(data)) => {
                self.step = Some(Box::pin(follower.next_owned()));
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Some(Err(e)) => {
                self.step = None;
                Poll::Ready(Some(Err(e)))
            }
            None => {
                self.step = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.step.is_none()
    }
}
