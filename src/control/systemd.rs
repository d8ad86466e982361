//! systemd service notifications: the `sd_notify` protocol, without libsystemd.
//!
//! The packaged unit (`systemd/ladder.service`, SPEC.md "Make targets": `make deb`,
//! `make rpm`) is `Type=notify` with `WatchdogSec=`: systemd hands the service the
//! address of its notification socket in `$NOTIFY_SOCKET` and the watchdog period in
//! `$WATCHDOG_USEC`, and waits for datagrams of newline-separated `NAME=value`
//! assignments (sd_notify(3)):
//!
//! - `READY=1` once every listener is bound: `systemctl start` returns then, and
//!   units ordered after ladder start then;
//! - `WATCHDOG=1` every half watchdog period, from a task on the I/O runtime
//!   ([`Notifier::spawn_watchdog`]): a runtime that stops running its timers is
//!   killed (SIGABRT) and, with `Restart=on-failure`, restarted. It proves the
//!   runtime alive, not every media thread;
//! - `STOPPING=1` when shutdown begins;
//! - `RELOADING=1` ([`Notifier::reloading`]) for a configuration reload, followed by
//!   `READY=1` when the new configuration is in place (the SIGHUP handler's to send);
//! - `STATUS=...`, a line `systemctl status` shows.
//!
//! Without `$NOTIFY_SOCKET` (a shell, a test, another supervisor) every call is a
//! no-op. The socket is a file system path (`/run/systemd/notify`) or, with a leading
//! `@`, a Linux abstract-namespace name. Each message goes out on a fresh unbound
//! datagram socket, as libsystemd does, so a systemd that re-executed itself and
//! recreated its socket is still reached.
//!
//! Parsing the variables and formatting messages are pure functions ([`NotifyAddr::parse`],
//! [`watchdog_interval`], [`format_message`]); [`send`] is the only code that touches a
//! socket.

use std::ffi::OsStr;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

/// How long one notification may block on a full socket queue before it is given up
/// (and the failure logged). systemd drains its queue continuously; the bound keeps a
/// wedged service manager from stalling the runtime task that sends.
pub const NOTIFY_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest `STATUS=` text sent, in bytes; longer text is cut at a character
/// boundary. A status is one line for `systemctl status`, not a log.
pub const MAX_STATUS_LEN: usize = 256;

/// Where notifications go: the value of `$NOTIFY_SOCKET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAddr {
    /// A socket in the file system, such as `/run/systemd/notify`.
    Path(PathBuf),
    /// A Linux abstract-namespace socket: `$NOTIFY_SOCKET` was `@name`; this is `name`.
    Abstract(Vec<u8>),
}

impl NotifyAddr {
    /// The address in a `$NOTIFY_SOCKET` value: an absolute path, or `@` and an
    /// abstract name. `None` for anything else (empty, a relative path, or a `vsock:`
    /// address, which systemd uses for virtual machines and this build does not
    /// speak).
    pub fn parse(value: &OsStr) -> Option<NotifyAddr> {
        let bytes = value.as_encoded_bytes();
        if bytes.starts_with(b"/") {
            return Some(NotifyAddr::Path(PathBuf::from(value)));
        }
        match bytes.strip_prefix(b"@") {
            Some(name) if !name.is_empty() => Some(NotifyAddr::Abstract(name.to_vec())),
            _ => None,
        }
    }
}

/// One assignment of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State<'a> {
    /// `READY=1`: start-up (or a reload) is complete.
    Ready,
    /// `RELOADING=1`: a configuration reload began; `READY=1` follows when done.
    Reloading,
    /// `STOPPING=1`: shutdown began.
    Stopping,
    /// `WATCHDOG=1`: alive.
    Watchdog,
    /// `STATUS=...`: a free-form line for `systemctl status`. Line breaks become
    /// spaces (a line break would start a new assignment); at most
    /// [`MAX_STATUS_LEN`] bytes are kept.
    Status(&'a str),
}

/// The datagram for `states`: one `NAME=value` line each, in order.
pub fn format_message(states: &[State<'_>]) -> String {
    let mut out = String::new();
    for state in states {
        match state {
            State::Ready => out.push_str("READY=1\n"),
            State::Reloading => out.push_str("RELOADING=1\n"),
            State::Stopping => out.push_str("STOPPING=1\n"),
            State::Watchdog => out.push_str("WATCHDOG=1\n"),
            State::Status(text) => {
                let mut end = text.len().min(MAX_STATUS_LEN);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                out.push_str("STATUS=");
                out.extend(text[..end].chars().map(|c| match c {
                    '\n' | '\r' => ' ',
                    c => c,
                }));
                out.push('\n');
            }
        }
    }
    out
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC` (as sd_watchdog_enabled(3)
/// advises), when the watchdog is on for this process. Off (`None`) without the
/// variable, when it is not a positive number of microseconds, or when
/// `$WATCHDOG_PID` is set and names another process (the variables were inherited
/// from a parent that systemd watches).
pub fn watchdog_interval(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    own_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        let pid: u32 = pid.to_str()?.trim().parse().ok()?;
        if pid != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec) / 2)
}

/// Send one datagram to the notification socket. Blocks at most
/// [`NOTIFY_SEND_TIMEOUT`].
#[cfg(unix)]
pub fn send(addr: &NotifyAddr, message: &str) -> io::Result<()> {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let to = match addr {
        NotifyAddr::Path(path) => SocketAddr::from_pathname(path)?,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        NotifyAddr::Abstract(name) => {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        NotifyAddr::Abstract(_) => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract-namespace sockets exist only on Linux",
            ))
        }
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(NOTIFY_SEND_TIMEOUT))?;
    let sent = socket.send_to_addr(message.as_bytes(), &to)?;
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", message.len()),
        ));
    }
    Ok(())
}

/// Without Unix sockets there is no systemd to notify.
#[cfg(not(unix))]
pub fn send(_addr: &NotifyAddr, _message: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "sd_notify needs Unix sockets",
    ))
}

/// The service's link to systemd: where to notify, and how often the watchdog wants
/// a ping. `Notifier::default()` is a disabled one (every call a no-op).
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    addr: Option<NotifyAddr>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From this process's `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
    /// A `$NOTIFY_SOCKET` that cannot be used is logged (systemd would then wait for a
    /// `READY=1` that never comes and fail the start at `TimeoutStartSec=`).
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let notifier = Notifier::from_vars(
            socket.as_deref(),
            std::env::var_os("WATCHDOG_USEC").as_deref(),
            std::env::var_os("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        if let (Some(value), None) = (&socket, &notifier.addr) {
            warn!(
                notify_socket = ?value,
                "NOTIFY_SOCKET is not an absolute path or an @abstract name: systemd will not be told that ladder is ready"
            );
        }
        notifier
    }

    /// From the variables' values; `own_pid` is this process's id. Without a socket
    /// the watchdog is off too (there is nowhere to ping).
    pub fn from_vars(
        notify_socket: Option<&OsStr>,
        watchdog_usec: Option<&OsStr>,
        watchdog_pid: Option<&OsStr>,
        own_pid: u32,
    ) -> Notifier {
        let addr = notify_socket.and_then(NotifyAddr::parse);
        let watchdog = addr
            .as_ref()
            .and_then(|_| watchdog_interval(watchdog_usec, watchdog_pid, own_pid));
        Notifier { addr, watchdog }
    }

    /// A notifier for `addr`, pinging every `watchdog` (tests, and callers that
    /// know the address some other way).
    pub fn new(addr: NotifyAddr, watchdog: Option<Duration>) -> Notifier {
        Notifier {
            addr: Some(addr),
            watchdog,
        }
    }

    /// Whether there is a socket to notify.
    pub fn is_enabled(&self) -> bool {
        self.addr.is_some()
    }

    /// How often [`Notifier::spawn_watchdog`] pings; `None` when the watchdog is off.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Send `states` in one datagram; `Ok` without doing anything when disabled.
    pub fn notify(&self, states: &[State<'_>]) -> io::Result<()> {
        match &self.addr {
            Some(addr) => send(addr, &format_message(states)),
            None => Ok(()),
        }
    }

    /// `READY=1` with a status line; a failure is logged.
    pub fn ready(&self, status: &str) {
        self.notify_logged(&[State::Ready, State::Status(status)], "READY=1");
    }

    /// `RELOADING=1` with a status line: a configuration reload began. Send
    /// [`Notifier::ready`] when the new configuration is in place (or the old one
    /// kept): until then `systemctl reload` waits. A failure is logged.
    pub fn reloading(&self, status: &str) {
        self.notify_logged(&[State::Reloading, State::Status(status)], "RELOADING=1");
    }

    /// `STOPPING=1`: shutdown began. A failure is logged.
    pub fn stopping(&self) {
        self.notify_logged(
            &[State::Stopping, State::Status("shutting down")],
            "STOPPING=1",
        );
    }

    fn notify_logged(&self, states: &[State<'_>], what: &str) {
        if let Err(e) = self.notify(states) {
            warn!(error = %e, socket = ?self.addr, "cannot send {what} to systemd (NOTIFY_SOCKET)");
        }
    }

    /// When the watchdog is on: a task that sends `WATCHDOG=1` every
    /// [`Notifier::watchdog_interval`], from now until `shutdown` turns true. A
    /// failed ping is logged once, and its recovery once, not every period.
    pub fn spawn_watchdog(
        &self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let interval = self.watchdog?;
        let notifier = self.clone();
        info!(
            ping_every_ms = interval.as_millis() as u64,
            "systemd watchdog on"
        );
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait_for(|v| *v) => break,
                }
                match notifier.notify(&[State::Watchdog]) {
                    Ok(()) if failing => {
                        failing = false;
                        info!("systemd watchdog pings get through again");
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        failing = true;
                        warn!(error = %e, socket = ?notifier.addr, "cannot ping the systemd watchdog (NOTIFY_SOCKET): systemd will restart ladder if this lasts");
                    }
                    Err(_) => {}
                }
            }
        }))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    /// A unique name for sockets of this test process.
    fn unique(tag: &str) -> String {
        format!(
            "ladder-notify-test-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        )
    }

    /// A bound receiving socket in a fresh directory, removed on drop.
    struct Receiver {
        dir: PathBuf,
        socket: UnixDatagram,
        path: PathBuf,
    }

    impl Receiver {
        fn new(tag: &str) -> Receiver {
            let dir = std::env::temp_dir().join(unique(tag));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("notify");
            let socket = UnixDatagram::bind(&path).unwrap();
            // a guard against a hang if nothing comes, not a timing assertion
            socket
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            Receiver { dir, socket, path }
        }

        fn recv(&self) -> String {
            let mut buf = [0u8; 1024];
            let n = self.socket.recv(&mut buf).expect("a notification");
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn notify_socket_values_parse_as_paths_or_abstract_names() {
        assert_eq!(
            NotifyAddr::parse(os("/run/systemd/notify")),
            Some(NotifyAddr::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            NotifyAddr::parse(os("@/org/freedesktop/systemd1/notify/42")),
            Some(NotifyAddr::Abstract(
                b"/org/freedesktop/systemd1/notify/42".to_vec()
            ))
        );
        for unusable in ["", "@", "run/systemd/notify", "vsock:2:1234"] {
            assert_eq!(NotifyAddr::parse(os(unusable)), None, "{unusable:?}");
        }
    }

    #[test]
    fn messages_are_one_assignment_per_line() {
        assert_eq!(format_message(&[State::Ready]), "READY=1\n");
        assert_eq!(
            format_message(&[State::Ready, State::Status("serving: RTMP 0.0.0.0:1935")]),
            "READY=1\nSTATUS=serving: RTMP 0.0.0.0:1935\n"
        );
        assert_eq!(format_message(&[State::Watchdog]), "WATCHDOG=1\n");
        assert_eq!(
            format_message(&[State::Stopping, State::Reloading]),
            "STOPPING=1\nRELOADING=1\n"
        );
        assert_eq!(format_message(&[]), "");
    }

    #[test]
    fn a_status_cannot_inject_an_assignment_or_run_long() {
        // a line break in the status would make "READY=1" an assignment of its own
        assert_eq!(
            format_message(&[State::Status("bad\nREADY=1\r\nx")]),
            "STATUS=bad READY=1  x\n"
        );
        let long = "é".repeat(MAX_STATUS_LEN); // 2 bytes each
        let msg = format_message(&[State::Status(&long)]);
        let text = msg
            .strip_prefix("STATUS=")
            .unwrap()
            .strip_suffix('\n')
            .unwrap();
        assert_eq!(text.len(), MAX_STATUS_LEN);
        assert!(text.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_watchdog_pings_at_half_its_period_and_only_for_its_own_pid() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval(Some(os("30000000")), None, 7), half);
        assert_eq!(
            watchdog_interval(Some(os("30000000")), Some(os("7")), 7),
            half
        );
        assert_eq!(
            watchdog_interval(Some(os("30000000")), Some(os("8")), 7),
            None
        );
        assert_eq!(
            watchdog_interval(Some(os("30000000")), Some(os("x")), 7),
            None
        );
        for bad in ["0", "", "-5", "30s", "1e6"] {
            assert_eq!(watchdog_interval(Some(os(bad)), None, 7), None, "{bad:?}");
        }
        assert_eq!(watchdog_interval(None, Some(os("7")), 7), None);
    }

    #[test]
    fn without_notify_socket_everything_is_a_no_op() {
        let n = Notifier::from_vars(None, Some(os("30000000")), None, 7);
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_interval(), None, "no socket, nowhere to ping");
        n.notify(&[State::Ready]).unwrap();
        let n = Notifier::from_vars(Some(os("relative")), None, None, 7);
        assert!(!n.is_enabled());
        let n = Notifier::from_vars(Some(os("/run/x")), Some(os("30000000")), None, 7);
        assert!(n.is_enabled());
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));
    }

    #[test]
    fn ready_status_and_stopping_reach_a_path_socket() {
        let rx = Receiver::new("path");
        let n = Notifier::from_vars(Some(rx.path.as_os_str()), None, None, 1);
        n.ready("serving: RTMP 127.0.0.1:1935, HTTP 127.0.0.1:8080");
        assert_eq!(
            rx.recv(),
            "READY=1\nSTATUS=serving: RTMP 127.0.0.1:1935, HTTP 127.0.0.1:8080\n"
        );
        n.reloading("reloading /etc/ladder/ladder.toml");
        assert_eq!(
            rx.recv(),
            "RELOADING=1\nSTATUS=reloading /etc/ladder/ladder.toml\n"
        );
        n.stopping();
        assert_eq!(rx.recv(), "STOPPING=1\nSTATUS=shutting down\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn notifications_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::SocketAddr;
        let name = unique("abstract");
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let value = format!("@{name}");
        let n = Notifier::from_vars(Some(os(&value)), None, None, 1);
        n.notify(&[State::Watchdog]).unwrap();
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1\n");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(unique("missing"));
        let n = Notifier::new(NotifyAddr::Path(dir.join("notify")), None);
        assert!(n.notify(&[State::Ready]).is_err());
        // the logged variants swallow it
        n.ready("x");
        n.stopping();
    }

    #[tokio::test]
    async fn the_watchdog_task_pings_until_shutdown() {
        let rx = Receiver::new("watchdog");
        let n = Notifier::new(
            NotifyAddr::Path(rx.path.clone()),
            Some(Duration::from_millis(1)),
        );
        let (tx, shutdown) = watch::channel(false);
        let task = n.spawn_watchdog(shutdown).expect("watchdog on");
        let rx = tokio::task::spawn_blocking(move || {
            for _ in 0..3 {
                assert_eq!(rx.recv(), "WATCHDOG=1\n");
            }
            rx
        })
        .await
        .unwrap();
        tx.send(true).unwrap();
        task.await.unwrap();
        drop(rx);
        // no interval, no task
        let off = Notifier::new(NotifyAddr::Path("/run/x".into()), None);
        assert!(off.spawn_watchdog(watch::channel(false).1).is_none());
    }
}
