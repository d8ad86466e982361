//! A destination's send queue (sans-IO): bounded, and on overflow it drops to the
//! next video keyframe.
//!
//! The publish path pushes (never waits); the destination's task pops and writes
//! to its socket. A destination slower than the stream (a congested uplink, a
//! stalled server) fills its queue; then [`QUEUE_OVERFLOW`] applies:
//!
//! - every media message queued is dropped, and so is every one after it until a
//!   video keyframe (a decoder cannot join between keyframes), which is queued;
//! - decoder configurations are never lost: the latest video and audio ones stay
//!   at the head of the emptied queue, so the destination still has them when the
//!   keyframe comes;
//! - each drop is counted ([`QueueStats`]).
//!
//! The same rule starts a destination: a new queue waits for a keyframe, and
//! after a reconnection the task asks the queue to [`DestinationQueue::restart`],
//! which keeps only the configurations and waits for a keyframe, so what a
//! destination receives always begins configurations, keyframe. (The first
//! connection sends what the queue holds: the stream from its first keyframe.)

use std::collections::VecDeque;
use std::sync::Arc;

use crate::media::{AudioConfig, AudioFrame, VideoConfig, VideoFrame};

/// Capacity of a destination's queue in media messages: about 6 s of 30 fps
/// video with 48 kHz AAC (47 frames/s), so a destination may stall that long
/// before anything is dropped. Bounded so a dead destination cannot grow memory.
pub const DESTINATION_QUEUE: usize = 480;

/// What a full destination queue does (ARCHITECTURE convention 3).
pub const QUEUE_OVERFLOW: &str = "drop everything queued and wait for the next video keyframe";

/// One message for a destination.
#[derive(Clone, Debug)]
pub enum Outgoing {
    VideoConfig(Arc<VideoConfig>),
    AudioConfig(Arc<AudioConfig>),
    Video(VideoFrame),
    Audio(AudioFrame),
}

impl Outgoing {
    fn is_config(&self) -> bool {
        matches!(self, Outgoing::VideoConfig(_) | Outgoing::AudioConfig(_))
    }

    fn is_keyframe(&self) -> bool {
        matches!(self, Outgoing::Video(f) if f.keyframe)
    }
}

/// A queue's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Media messages dropped (overflow, or waiting for a keyframe after one).
    pub dropped: u64,
    /// Times the queue overflowed.
    pub overflows: u64,
}

/// See the module docs.
#[derive(Debug)]
pub struct DestinationQueue {
    items: VecDeque<Outgoing>,
    capacity: usize,
    /// Dropping media until a video keyframe.
    waiting_keyframe: bool,
    /// The latest configurations pushed (to survive an overflow or a restart).
    video_config: Option<Arc<VideoConfig>>,
    audio_config: Option<Arc<AudioConfig>>,
    stats: QueueStats,
}

impl DestinationQueue {
    /// A queue of `capacity` media messages (at least 1), waiting for a keyframe.
    pub fn new(capacity: usize) -> Self {
        DestinationQueue {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            waiting_keyframe: true,
            video_config: None,
            audio_config: None,
            stats: QueueStats::default(),
        }
    }

    /// Queue a message (never blocks; see the module docs for what is dropped).
    pub fn push(&mut self, item: Outgoing) {
        match &item {
            Outgoing::VideoConfig(c) => self.video_config = Some(c.clone()),
            Outgoing::AudioConfig(c) => self.audio_config = Some(c.clone()),
            _ => {}
        }
        if item.is_config() {
            // configurations are rare; a publisher sending nothing else is
            // still bounded: each one replaces the queue when it is full
            if self.items.len() >= self.capacity {
                self.overflow();
            }
            self.items.push_back(item);
            return;
        }
        if self.waiting_keyframe {
            if !item.is_keyframe() {
                self.stats.dropped += 1;
                return;
            }
            self.waiting_keyframe = false;
        }
        if self.items.len() >= self.capacity {
            self.overflow();
            if !item.is_keyframe() {
                self.stats.dropped += 1;
                return;
            }
            self.waiting_keyframe = false;
        }
        self.items.push_back(item);
    }

    /// The next message to send.
    pub fn pop(&mut self) -> Option<Outgoing> {
        self.items.pop_front()
    }

    /// Media messages and configurations queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    /// A new connection: drop what is queued (not counted: it was for the
    /// connection that ended), keep the configurations, wait for a keyframe.
    pub fn restart(&mut self) {
        self.items.clear();
        self.requeue_configs();
        self.waiting_keyframe = true;
    }

    fn overflow(&mut self) {
        self.stats.overflows += 1;
        self.stats.dropped += self.items.iter().filter(|i| !i.is_config()).count() as u64;
        self.items.clear();
        self.requeue_configs();
        self.waiting_keyframe = true;
    }

    fn requeue_configs(&mut self) {
        if let Some(c) = &self.video_config {
            self.items.push_back(Outgoing::VideoConfig(c.clone()));
        }
        if let Some(c) = &self.audio_config {
            self.items.push_back(Outgoing::AudioConfig(c.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{AudioCodec, Timestamp};
    use bytes::Bytes;

    fn video(ms: i64, keyframe: bool) -> Outgoing {
        Outgoing::Video(VideoFrame {
            dts: Timestamp::from_millis(ms),
            pts: Timestamp::from_millis(ms),
            keyframe,
            data: Bytes::new(),
        })
    }

    fn audio(ms: i64) -> Outgoing {
        Outgoing::Audio(AudioFrame {
            dts: Timestamp::from_millis(ms),
            data: Bytes::new(),
        })
    }

    fn aac() -> Outgoing {
        Outgoing::AudioConfig(Arc::new(AudioConfig {
            codec: AudioCodec::Aac,
            asc: Bytes::from_static(&[0x12, 0x10]),
            object_type: 2,
            sample_rate: 44100,
            channels: 2,
            frame_samples: 1024,
            codec_string: "mp4a.40.2".into(),
        }))
    }

    /// What a destination would receive: `c` config, `K` keyframe, `v` video, `a` audio.
    fn drain(q: &mut DestinationQueue) -> String {
        std::iter::from_fn(|| q.pop())
            .map(|i| match i {
                Outgoing::VideoConfig(_) | Outgoing::AudioConfig(_) => 'c',
                Outgoing::Video(f) if f.keyframe => 'K',
                Outgoing::Video(_) => 'v',
                Outgoing::Audio(_) => 'a',
            })
            .collect()
    }

    #[test]
    fn starts_at_a_keyframe() {
        let mut q = DestinationQueue::new(10);
        q.push(aac());
        q.push(audio(0));
        q.push(video(0, false));
        q.push(video(33, true));
        q.push(audio(40));
        assert_eq!(drain(&mut q), "cKa");
        assert_eq!(q.stats().dropped, 2);
    }

    #[test]
    fn overflow_drops_to_the_next_keyframe_and_keeps_configs() {
        let mut q = DestinationQueue::new(4);
        q.push(aac());
        q.push(video(0, true));
        q.push(video(33, false));
        q.push(audio(40));
        // full (4): this one overflows: 3 media dropped, and itself
        q.push(video(66, false));
        q.push(audio(80));
        q.push(video(100, true));
        q.push(video(133, false));
        assert_eq!(drain(&mut q), "cKv");
        assert_eq!(
            q.stats(),
            QueueStats {
                dropped: 5,
                overflows: 1
            }
        );
    }

    #[test]
    fn a_keyframe_that_overflows_is_kept() {
        let mut q = DestinationQueue::new(2);
        q.push(video(0, true));
        q.push(video(33, false));
        q.push(video(66, true));
        assert_eq!(drain(&mut q), "K");
        assert_eq!(q.stats().dropped, 2);
    }

    #[test]
    fn restart_keeps_configs_and_waits_for_a_keyframe() {
        let mut q = DestinationQueue::new(10);
        q.push(aac());
        q.push(video(0, true));
        q.push(video(33, false));
        q.restart();
        q.push(video(66, false));
        q.push(video(100, true));
        assert_eq!(drain(&mut q), "cK");
        assert_eq!(q.stats().dropped, 1, "only what came after the restart");
    }

    #[test]
    fn the_queue_never_exceeds_its_capacity_by_more_than_the_configs() {
        let mut q = DestinationQueue::new(8);
        q.push(aac());
        for i in 0..10_000 {
            q.push(video(i * 33, i % 50 == 0));
            q.push(audio(i * 33));
            if i % 1000 == 0 {
                q.push(aac());
            }
            assert!(q.len() <= 8 + 2, "{}", q.len());
        }
    }
}
