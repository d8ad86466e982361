//! A destination's task: connect, publish, send what its queue holds, and
//! reconnect with backoff until the publish session ends. The only restream
//! file that does I/O (through `ingest::client`).
//!
//! Logging, per destination (URL redacted): one line when it goes live, one
//! when a live connection is lost, one when it stops (with its bytes,
//! reconnections and drops), and one per *change* of failure while it
//! cannot connect (the same failure again is logged at debug level with its
//! attempt number), so a destination that is down for hours costs a line, not
//! one a minute; one when it is paused and one when it resumes.
//!
//! Paused (the admin API, [`Destination::set_paused`]): a live connection
//! unpublishes and closes within [`CLOSE_GRACE`], a connection attempt or
//! a backoff wait is abandoned; then the task waits for the resume (or the
//! end of the session) and connects at once, without backoff.
//!
//! Stopping and pausing are bounded whatever the destination does: what is
//! queued gets [`CLOSE_GRACE`] to go out, the unpublish another. A
//! destination that reads slower than the stream (a congested uplink, a
//! stalled server) keeps the queue from emptying and each write within its
//! deadline: after the grace its connection is dropped without a word (it
//! may be cut mid-message), logged once, so a slow destination cannot keep
//! a finished session's task, queue and socket alive, nor overlap the next
//! session's connection on the same stream key.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::backoff::{jitter_seed, Backoff};
use super::queue::Outgoing;
use super::tags;
use super::{Destination, DestinationState};
use crate::ingest::client::{self, ClientError, ConnectOptions, RtmpClientConnection};
use crate::ingest::rtmp::client::{ClientConfig, ClientMode};
use crate::ingest::rtmp::url::RtmpUrl;
use crate::media::{AudioConfig, RtmpTimestamp, Timestamp, VideoConfig};

/// How long a stopping destination may take to send what is queued, and
/// then to unpublish politely.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How a live connection's pump ended without a failure.
enum Pumped {
    /// The session ended: unpublish and finish.
    Stopped,
    /// Paused: unpublish and wait for the resume.
    Paused,
    /// The session ended (`stopping`) or the destination was paused, and
    /// [`CLOSE_GRACE`] later the pump was still writing to a destination
    /// that does not take what is queued: the connection is dropped.
    Abandoned { stopping: bool },
}

/// Resolves [`CLOSE_GRACE`] after the session stops or the destination is
/// paused: a pump still running then is held by a destination that reads
/// too slowly (see the module docs).
async fn grace_expired(
    mut stop: watch::Receiver<bool>,
    mut paused: watch::Receiver<bool>,
) -> Pumped {
    // a stop sender gone is a stop (the session is over), as in `pump`
    let stopping = tokio::select! {
        _ = stop.wait_for(|v| *v) => true,
        _ = paused.wait_for(|p| *p) => false,
    };
    tokio::time::sleep(CLOSE_GRACE).await;
    Pumped::Abandoned { stopping }
}

/// Run `dest` for `channel` until `stop` turns true.
pub async fn run(
    channel: String,
    dest: Arc<Destination>,
    mut stop: watch::Receiver<bool>,
    options: ConnectOptions,
) {
    let target = dest.status().target;
    let url = match RtmpUrl::parse(&dest.target.url) {
        Ok(u) => u,
        Err(e) => {
            warn!(%channel, destination = %target, "restream disabled: {e}");
            dest.set(|s| {
                s.state = DestinationState::Stopped;
                s.last_error = Some(e.to_string());
            });
            return;
        }
    };
    let mut backoff = Backoff::new();
    let mut random = jitter_seed();
    let mut attempts: u64 = 0;
    // the failure last logged at warning level (its text), None once live
    let mut logged: Option<String> = None;
    let mut sent_before: u64 = 0;
    let mut paused = dest.paused.subscribe();
    // a connection took messages from the queue
    let mut consumed = false;
    loop {
        if *stop.borrow() {
            break;
        }
        if *paused.borrow_and_update() {
            dest.set(|s| s.state = DestinationState::Paused);
            info!(%channel, destination = %target, "restream paused");
            tokio::select! {
                _ = paused.wait_for(|p| !*p) => {}
                _ = stop.wait_for(|v| *v) => break,
            }
            info!(%channel, destination = %target, "restream resumed");
            backoff = Backoff::new();
            logged = None;
            continue;
        }
        dest.set(|s| s.state = DestinationState::Connecting);
        if attempts > 0 {
            dest.set(|s| s.reconnects += 1);
        }
        attempts += 1;
        // Enhanced RTMP codecs announced, for an HEVC or AV1 source (servers
        // that do not know the property ignore it)
        let mut config = ClientConfig::new(&url, ClientMode::Publish);
        config.four_cc_list = vec!["avc1".into(), "hvc1".into(), "av01".into()];
        let connected = tokio::select! {
            r = client::connect_with(&url, config, &options) => r,
            _ = stop.wait_for(|v| *v) => break,
            _ = paused.wait_for(|p| *p) => continue,
        };
        match connected {
            Err(e) => note_failure(&channel, &target, &dest, &e, attempts, &mut logged, false),
            Ok(mut conn) => {
                info!(%channel, destination = %target, rendition = dest.target.rendition.as_deref().unwrap_or("source"), peer = %conn.peer_addr(), "restream live");
                logged = None;
                dest.went_live();
                dest.set(|s| {
                    s.state = DestinationState::Live;
                    s.live_since = Some(SystemTime::now());
                });
                // What an earlier connection left in the queue starts
                // mid-GOP: drop it, wait for a keyframe. Before the first
                // connection nothing was taken from it: it starts at a
                // keyframe already (and holds the stream's first GOP).
                if consumed {
                    dest.queue
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .restart();
                }
                consumed = true;
                let up = Instant::now();
                let grace = grace_expired(stop.clone(), dest.paused.subscribe());
                let result = tokio::select! {
                    r = pump(&mut conn, &dest, &mut stop, &mut paused, sent_before) => r,
                    abandoned = grace => Ok(abandoned),
                };
                sent_before += conn.stats().bytes_sent;
                backoff.connection_ended(up.elapsed());
                dest.set(|s| s.live_since = None);
                match result {
                    Ok(Pumped::Stopped) => {
                        // stopping: unpublish politely, briefly
                        let _ = tokio::time::timeout(CLOSE_GRACE, conn.close()).await;
                        break;
                    }
                    Ok(Pumped::Paused) => {
                        let _ = tokio::time::timeout(CLOSE_GRACE, conn.close()).await;
                        dest.set(|s| s.bytes = sent_before);
                        continue;
                    }
                    Ok(Pumped::Abandoned { stopping }) => {
                        let left = dest.queue.lock().unwrap_or_else(|e| e.into_inner()).len();
                        warn!(%channel, destination = %target, left, grace = ?CLOSE_GRACE, "restream destination did not take what was queued in time; connection dropped without unpublishing");
                        dest.set(|s| s.bytes = sent_before);
                        drop(conn);
                        if stopping {
                            break;
                        }
                        continue;
                    }
                    Err(e) => {
                        note_failure(&channel, &target, &dest, &e, attempts, &mut logged, true)
                    }
                }
            }
        }
        random = random
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = backoff.next_delay(random >> 11);
        dest.set(|s| s.state = DestinationState::Waiting);
        debug!(%channel, destination = %target, "restream: next attempt in {delay:?}");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|v| *v) => break,
            _ = paused.wait_for(|p| *p) => {}
        }
    }
    dest.set(|s| s.state = DestinationState::Stopped);
    let status = dest.status();
    info!(%channel, destination = %target, rendition = dest.target.rendition.as_deref().unwrap_or("source"), bytes = status.bytes, reconnects = status.reconnects, dropped = status.dropped, "restream stopped");
}

/// Record a failure; log it when it is news (see the module docs).
fn note_failure(
    channel: &str,
    target: &str,
    dest: &Destination,
    e: &ClientError,
    attempt: u64,
    logged: &mut Option<String>,
    was_live: bool,
) {
    let text = e.to_string();
    dest.set(|s| s.last_error = Some(text.clone()));
    if was_live {
        warn!(%channel, destination = %target, error = %text, "restream connection lost; reconnecting");
    } else if logged.as_deref() != Some(text.as_str()) {
        warn!(%channel, destination = %target, error = %text, attempt, "restream cannot connect; retrying with backoff");
    } else {
        debug!(%channel, destination = %target, error = %text, attempt, "restream cannot connect");
    }
    *logged = Some(text);
}

/// Send the queue's messages until `stop` or a pause (Ok) or a failure (Err).
async fn pump(
    conn: &mut RtmpClientConnection,
    dest: &Destination,
    stop: &mut watch::Receiver<bool>,
    paused: &mut watch::Receiver<bool>,
    sent_before: u64,
) -> Result<Pumped, ClientError> {
    let mut video: Option<Arc<VideoConfig>> = None;
    let mut audio: Option<Arc<AudioConfig>> = None;
    // the first media message's dts: the connection's time zero
    let mut base: Option<Timestamp> = None;
    // once stopping: what is still queued goes out until this deadline
    let mut flush_until: Option<tokio::time::Instant> = None;
    loop {
        let item = loop {
            if *paused.borrow() && flush_until.is_none() {
                return Ok(Pumped::Paused);
            }
            let next = dest.queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
            if let Some(item) = next {
                break item;
            }
            if flush_until.is_some() {
                return Ok(Pumped::Stopped);
            }
            tokio::select! {
                _ = dest.ready.notified() => {}
                _ = stop.wait_for(|v| *v) => {
                    flush_until = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                }
                _ = paused.wait_for(|p| *p) => return Ok(Pumped::Paused),
            }
        };
        if flush_until.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Ok(Pumped::Stopped);
        }
        match item {
            Outgoing::VideoConfig(c) => {
                if let Some(b) = base {
                    if video.as_deref() != Some(&*c) {
                        conn.send_video(ts(b, b), tags::video_header(&c)).await?;
                    }
                }
                video = Some(c);
            }
            Outgoing::AudioConfig(c) => {
                if let Some(b) = base {
                    if audio.as_deref() != Some(&*c) {
                        conn.send_audio(ts(b, b), tags::audio_header(&c)).await?;
                    }
                }
                audio = Some(c);
            }
            Outgoing::Video(f) => {
                let Some(config) = video.clone() else {
                    continue; // no configuration yet: nothing could decode it
                };
                let b = match base {
                    Some(b) => b,
                    None => {
                        // the connection's start: metadata, then both headers
                        let b = f.dts;
                        base = Some(b);
                        conn.send_metadata(tags::metadata(Some(&config), audio.as_deref()))
                            .await?;
                        conn.send_video(ts(b, b), tags::video_header(&config))
                            .await?;
                        if let Some(a) = &audio {
                            conn.send_audio(ts(b, b), tags::audio_header(a)).await?;
                        }
                        b
                    }
                };
                match tags::video_frame(&config, &f) {
                    Ok(body) => conn.send_video(ts(f.dts, b), body).await?,
                    Err(e) => debug!("restream: frame not sent: {e}"),
                }
            }
            Outgoing::Audio(f) => {
                // before the first video keyframe nothing is sent
                if let (Some(b), true) = (base, audio.is_some()) {
                    if f.dts >= b {
                        conn.send_audio(ts(f.dts, b), tags::audio_frame(&f)).await?;
                    }
                }
            }
        }
        let sent = sent_before + conn.stats().bytes_sent;
        dest.set(|s| s.bytes = sent);
    }
}

fn ts(t: Timestamp, base: Timestamp) -> RtmpTimestamp {
    RtmpTimestamp(tags::rtmp_ms(t, base))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::config::RestreamTarget;
    use crate::ingest::rtmp::handshake::{HandshakeProgress, ServerHandshake};
    use crate::ingest::rtmp::session::{ServerEvent, ServerSession, SessionConfig};
    use crate::media::{AudioCodec, AudioFrame, VideoFrame};
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    const KEY: &str = "SECRET-dest-key";

    /// What the scripted server does with a publish.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Answer {
        Accept,
        /// onStatus error NetStream.Publish.BadName, quoting the key.
        Refuse,
        /// Accepts, then never reads again (holding the connection).
        AcceptThenStopReading,
    }

    /// An RTMP server (Ladder's own handshake and session) on a loopback
    /// port: answers every publish with `answer`, and sends each
    /// connection's events down the channel; counts connections.
    async fn server(
        answer: Answer,
    ) -> (
        String,
        mpsc::UnboundedReceiver<ServerEvent>,
        Arc<AtomicUsize>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("rtmp://{}/live/{KEY}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut hs = ServerHandshake::new(0, 3);
                    let mut session = ServerSession::new(SessionConfig::default());
                    let mut handshaking = true;
                    let mut published = false;
                    loop {
                        let n = match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if handshaking {
                            let progress = hs.feed(&buf[..n]).unwrap();
                            if let Some(out) = hs.take_output() {
                                sock.write_all(&out).await.unwrap();
                            }
                            let HandshakeProgress::Done { remaining } = progress else {
                                continue;
                            };
                            handshaking = false;
                            session.feed(&remaining).unwrap();
                        } else if session.feed(&buf[..n]).is_err() {
                            return;
                        }
                        while let Some(ev) = session.poll_event() {
                            if let ServerEvent::PublishRequested { stream_id, .. } = &ev {
                                published = true;
                                match answer {
                                    Answer::Accept | Answer::AcceptThenStopReading => {
                                        session.accept_publish(*stream_id)
                                    }
                                    Answer::Refuse => session.reject_publish(
                                        *stream_id,
                                        "NetStream.Publish.BadName",
                                        &format!("{KEY} is already publishing"),
                                    ),
                                }
                            }
                            let _ = tx.send(ev);
                        }
                        while let Some(out) = session.take_output() {
                            if sock.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                        if answer == Answer::AcceptThenStopReading && published {
                            std::future::pending::<()>().await;
                        }
                    }
                });
            }
        });
        (url, rx, connections)
    }

    /// The avcC FFmpeg's FLV muxer sent for x264 High 720p30.
    fn video_config() -> Arc<VideoConfig> {
        const AVCC: &str = "0164001fffe1001a6764001facd9405005bb0110000003001000000303c0f183196001000668ebe3cb22c0fdf8f800";
        let bytes: Vec<u8> = (0..AVCC.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&AVCC[i..i + 2], 16).unwrap())
            .collect();
        Arc::new(crate::media::avc::video_config(Bytes::from(bytes)).unwrap())
    }

    fn audio_config() -> Arc<AudioConfig> {
        Arc::new(AudioConfig {
            codec: AudioCodec::Aac,
            asc: Bytes::from_static(&[0x11, 0x90]),
            object_type: 2,
            sample_rate: 48000,
            channels: 2,
            frame_samples: 1024,
            codec_string: "mp4a.40.2".into(),
        })
    }

    fn frame(ms: i64, keyframe: bool) -> Outgoing {
        Outgoing::Video(VideoFrame {
            dts: Timestamp::from_millis(ms),
            pts: Timestamp::from_millis(ms),
            keyframe,
            data: Bytes::from(vec![
                0,
                0,
                0,
                2,
                if keyframe { 0x65 } else { 0x41 },
                ms as u8,
            ]),
        })
    }

    fn target(url: &str) -> RestreamTarget {
        RestreamTarget {
            url: url.into(),
            rendition: None,
        }
    }

    /// Waits (bounded, so that a bug fails instead of hanging) for `what`.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let t = Instant::now();
        while !done() {
            assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The first GOP is not lost to a slow connection: what the queue holds
    /// when the first connection comes up (from the first keyframe on) is
    /// sent, headers first.
    #[tokio::test]
    async fn frames_queued_before_the_first_connection_are_sent() {
        let (url, mut events, _) = server(Answer::Accept).await;
        let dest = Destination::new(target(&url));
        // the publish session starts before the destination is reachable
        dest.push(Outgoing::VideoConfig(video_config()));
        dest.push(Outgoing::AudioConfig(audio_config()));
        dest.push(frame(1000, true));
        dest.push(Outgoing::Audio(AudioFrame {
            dts: Timestamp::from_millis(1010),
            data: Bytes::from_static(&[0x21, 0x10]),
        }));
        dest.push(frame(1033, false));
        dest.push(frame(1066, false));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(
            "news".into(),
            dest.clone(),
            stop_rx,
            ConnectOptions::default(),
        ));
        let mut media = Vec::new();
        while media.len() < 6 {
            let ev = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("the destination sent nothing")
                .unwrap();
            match ev {
                ServerEvent::Video {
                    timestamp, payload, ..
                } => media.push(('v', timestamp.0, payload[..2].to_vec())),
                ServerEvent::Audio {
                    timestamp, payload, ..
                } => media.push(('a', timestamp.0, payload[..2].to_vec())),
                _ => {}
            }
        }
        assert_eq!(
            media,
            [
                ('v', 0, vec![0x17, 0]),
                ('a', 0, vec![0xaf, 0]),
                ('v', 0, vec![0x17, 1]),
                ('a', 10, vec![0xaf, 1]),
                ('v', 33, vec![0x27, 1]),
                ('v', 66, vec![0x27, 1]),
            ]
        );
        assert_eq!(dest.status().state, DestinationState::Live);
        assert_eq!(dest.status().reconnects, 0);
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(dest.status().state, DestinationState::Stopped);
    }

    /// A destination that refuses the publish: the status says why (the key
    /// redacted), and it is tried again after a backoff, until stopped.
    #[tokio::test]
    async fn a_refusing_destination_is_retried_with_backoff() {
        let (url, _events, connections) = server(Answer::Refuse).await;
        let dest = Destination::new(target(&url));
        let (stop_tx, stop_rx) = watch::channel(false);
        let started = Instant::now();
        let task = tokio::spawn(run(
            "news".into(),
            dest.clone(),
            stop_rx,
            ConnectOptions::default(),
        ));
        until("a second attempt", || {
            connections.load(Ordering::SeqCst) >= 2
        })
        .await;
        // the first wait is BASE_DELAY/2 at least
        assert!(started.elapsed() >= super::super::backoff::BASE_DELAY / 2);
        let status = dest.status();
        let error = status.last_error.clone().expect("no last_error");
        assert!(error.contains("NetStream.Publish.BadName"), "{error}");
        assert!(!error.contains(KEY), "{error}");
        assert!(status.reconnects >= 1, "{status:?}");
        assert_ne!(status.state, DestinationState::Live);
        assert_eq!(status.bytes, 0);
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(dest.status().state, DestinationState::Stopped);
        assert!(dest.status().target.ends_with("/live/<key>"));
    }

    /// A destination that accepts the publish and then stops reading, with
    /// a write deadline far longer than the test: when the session stops,
    /// the task still ends within the close grace (dropping the connection),
    /// not when the write deadline or the queue would allow.
    #[tokio::test]
    async fn a_destination_that_stops_reading_does_not_hold_the_stop() {
        let (url, _events, _) = server(Answer::AcceptThenStopReading).await;
        let dest = Destination::new(target(&url));
        let (stop_tx, stop_rx) = watch::channel(false);
        let options = ConnectOptions {
            timeouts: client::Timeouts {
                write: Duration::from_secs(600),
                ..Default::default()
            },
            ..Default::default()
        };
        let task = tokio::spawn(run("news".into(), dest.clone(), stop_rx, options));
        dest.push(Outgoing::VideoConfig(video_config()));
        // 25 MiB of frames: more than loopback's socket buffers take
        for i in 0..100 {
            let mut data = vec![0u8; 256 * 1024];
            data[..4].copy_from_slice(&(256 * 1024 - 4u32).to_be_bytes());
            data[4] = if i % 30 == 0 { 0x65 } else { 0x41 };
            dest.push(Outgoing::Video(VideoFrame {
                dts: Timestamp::from_millis(i * 33),
                pts: Timestamp::from_millis(i * 33),
                keyframe: i % 30 == 0,
                data: Bytes::from(data),
            }));
        }
        until("live", || dest.status().state == DestinationState::Live).await;
        // the pump is stuck once the bytes written stop moving
        let t = Instant::now();
        let mut last = (dest.status().bytes, Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let bytes = dest.status().bytes;
            if bytes != last.0 {
                last = (bytes, Instant::now());
            } else if bytes > 0 && last.1.elapsed() > Duration::from_millis(300) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "never stalled");
        }
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the task outlived the stop by far more than the close grace")
            .unwrap();
        assert_eq!(dest.status().state, DestinationState::Stopped);
        assert!(
            !dest.queue.lock().unwrap().is_empty(),
            "the server read everything: nothing was stalled"
        );
    }
}
