#!/usr/bin/env python3
"""make soak: Ladder under a steady load for a long time, watched for drift.

Runs `ladder serve` (the release build) with CHANNELS channels, each
transcoding a small ladder (source passthrough and one x264 rung) from an
ffmpeg publisher that is SIGKILLed at a random moment (mid-GOP) every 1 to 5
minutes and comes back a few seconds later. Each channel has an LL-HLS viewer
(blocking playlist reloads, every part downloaded) and a DASH viewer
(manifest and segments). The first channel also restreams to nginx-rtmp when
nginx and its RTMP module are installed.

Every SAMPLE seconds (default 60) it reads /metrics: resident memory, open
file descriptors, OS threads and tokio tasks, at a moment when every channel
is live (so that samples compare like with like). At the end it compares the
median of the samples just after warm-up with the median of the last ones;
a figure that moved by more than 5% is drift, and the soak fails (exit 1).
It also fails when Ladder exits, or a viewer sees a protocol error (a
playlist that does not parse, a media sequence that goes back).

    python3 scripts/soak.py [--minutes 30] [--channels 4] [--bin target/release/ladder]

Output, in target/soak/<UTC time>/: samples.csv, ladder.log, summary.txt.
"""

import argparse
import csv
import datetime
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = ["process_resident_memory_bytes", "process_open_fds", "process_threads", "ladder_tasks"]
DRIFT_LIMIT = 0.05
NGINX = "/usr/sbin/nginx"
RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def log(msg):
    print(f"{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S} soak: {msg}", flush=True)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.errors = []

    def add(self, name, n=1):
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + n

    def error(self, msg):
        with self.lock:
            self.counts["protocol_errors"] = self.counts.get("protocol_errors", 0) + 1
            if len(self.errors) < 50:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {msg}")


def http_get(url, timeout=10):
    """(status, body); status 0 when the connection failed."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except (OSError, urllib.error.URLError):
        return 0, b""


def hls_viewer(base, channel, stop, stats):
    """An LL-HLS player's requests: blocking reloads for the next part, each
    new part downloaded; starts over when the channel goes away."""
    last_msn = None
    while not stop.is_set():
        status, body = http_get(f"{base}/live/{channel}/master.m3u8")
        if status != 200:
            stats.add("hls_waits")
            stop.wait(1)
            continue
        variants = [l for l in body.decode(errors="replace").splitlines() if l and not l.startswith("#")]
        if not variants:
            stats.error(f"{channel}: master playlist without variants")
            stop.wait(1)
            continue
        media = f"{base}/live/{channel}/{variants[-1]}"
        directive = ""
        seen_parts = set()
        while not stop.is_set():
            status, body = http_get(media + directive, timeout=15)
            if status in (0, 404, 503):
                stats.add("hls_waits")
                break
            if status != 200:
                stats.error(f"{channel}: playlist answered {status}")
                break
            text = body.decode(errors="replace")
            m = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text)
            if not text.startswith("#EXTM3U") or not m:
                stats.error(f"{channel}: playlist does not parse")
                break
            msn = int(m.group(1))
            if last_msn is not None and msn < last_msn:
                stats.error(f"{channel}: media sequence went back {last_msn} -> {msn}")
            last_msn = msn
            stats.add("hls_playlists")
            parts = re.findall(r'#EXT-X-PART:[^\n]*URI="(part-(\d+)\.m4s)"', text)
            for uri, _ in parts[-3:]:
                if uri in seen_parts:
                    continue
                seen_parts.add(uri)
                status, data = http_get(media.rsplit("/", 1)[0] + "/" + uri)
                if status == 200 and data:
                    stats.add("hls_parts")
                    stats.add("bytes", len(data))
                elif status not in (0, 404):
                    stats.error(f"{channel}: {uri} answered {status}")
            if len(seen_parts) > 1000:
                seen_parts = set(list(seen_parts)[-100:])
            # block until the part after the last listed one exists: parts
            # after the last EXTINF belong to segment msn + complete segments
            complete = len(re.findall(r"^#EXTINF", text, re.M))
            after = text[text.rfind("#EXTINF"):].split("\n", 2)[-1] if complete else text
            open_parts = len(re.findall(r"^#EXT-X-PART:", after, re.M))
            if "#EXT-X-ENDLIST" in text:
                directive = ""
                stop.wait(1)
            else:
                directive = f"?_HLS_msn={msn + complete}&_HLS_part={open_parts}"


def dash_viewer(base, channel, stop, stats):
    """A DASH player's requests, coarsely: the MPD every 2 s, and the newest
    segment number's media it names."""
    while not stop.is_set():
        status, body = http_get(f"{base}/live/{channel}/manifest.mpd")
        if status == 200 and body.startswith(b"<?xml"):
            stats.add("dash_manifests")
        elif status in (0, 404, 503):
            stats.add("dash_waits")
        else:
            stats.error(f"{channel}: MPD answered {status}")
        stop.wait(2)


def publisher(bin_ffmpeg, clip, url, channel, stop, stats, rng):
    """Publishes `clip` in a loop; SIGKILL after 60-300 s, back 1-5 s later."""
    while not stop.is_set():
        p = subprocess.Popen(
            [bin_ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", clip,
             "-c", "copy", "-f", "flv", url],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stats.add("publishes")
        stop.wait(rng.uniform(60, 300))
        p.send_signal(signal.SIGKILL)
        p.wait()
        stats.add("publisher_kills")
        stop.wait(rng.uniform(1, 5))


def metrics(admin):
    status, body = http_get(f"{admin}/metrics")
    if status != 200:
        return None
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("#"):
            continue
        parts = line.split(" ")
        if len(parts) == 2 and ("{" not in parts[0]):
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return out


def write_config(path, channels, ports, nginx_port):
    lines = [
        "[server]",
        f'rtmp_listen = "127.0.0.1:{ports["rtmp"]}"',
        f'http_listen = "127.0.0.1:{ports["http"]}"',
        f'admin_listen = "127.0.0.1:{ports["admin"]}"',
        "[auth]",
        "open = false",
        "[ingest]",
        'duplicate_publisher = "replace"',
        "[packaging]",
        "segment_seconds = 2.0",
        "part_seconds = 0.5",
        "window_segments = 8",
        "[ladders.soak]",
        'backend = "cpu"',
        "renditions = [",
        '  { name = "source", passthrough = true },',
        '  { name = "144p", height = 144, bitrate_kbps = 200 },',
        "]",
    ]
    for i in range(channels):
        lines += ["[[channels]]", f'name = "soak{i}"', f'key = "soak-key-{i}"', 'ladder = "soak"']
        if i == 0 and nginx_port:
            lines.append(f'restream = ["rtmp://127.0.0.1:{nginx_port}/live/soak-restream"]')
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def start_nginx(work, port):
    os.makedirs(os.path.join(work, "nginx", "logs"), exist_ok=True)
    conf = os.path.join(work, "nginx", "nginx.conf")
    with open(conf, "w") as f:
        f.write(
            f"""load_module {RTMP_MODULE};
daemon off; master_process off; pid {work}/nginx/nginx.pid; error_log {work}/nginx/logs/error.log;
events {{ worker_connections 64; }}
rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; record off; }} }} }}
""")
    return subprocess.Popen([NGINX, "-p", os.path.join(work, "nginx"), "-c", conf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def drift(samples, name, warmup_s):
    """(baseline, final, relative change) of `name`: medians of the first
    fifth after warm-up and of the last fifth of the run."""
    values = [(s["t"], s[name]) for s in samples if s.get(name) is not None and s["t"] >= warmup_s]
    if len(values) < 4:
        return None
    k = max(1, len(values) // 5)
    base = statistics.median(v for _, v in values[:k])
    final = statistics.median(v for _, v in values[-k:])
    return base, final, (final - base) / base if base else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 30)))
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--sample", type=float, default=60.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds before the baseline (default: a tenth of the run, at least 3 minutes)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "ladder"))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else max(180.0, duration / 10)
    if warmup >= duration:
        warmup = duration / 4

    out = os.path.join(ROOT, "target", "soak", datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    os.makedirs(out)
    log(f"{args.channels} channels for {args.minutes:g} min, samples every {args.sample:g} s, "
        f"warm-up {warmup:g} s; output in {out}")

    clip = os.path.join(out, "clip.flv")
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "60",
         "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
         "-b:v", "400k", "-c:a", "aac", "-b:a", "64k", clip], check=True)

    ports = {"rtmp": free_port(), "http": free_port(), "admin": free_port()}
    nginx = None
    nginx_port = None
    if os.path.exists(NGINX) and os.path.exists(RTMP_MODULE):
        nginx_port = free_port()
        nginx = start_nginx(out, nginx_port)
    config = os.path.join(out, "ladder.toml")
    write_config(config, args.channels, ports, nginx_port)
    ladder_log = open(os.path.join(out, "ladder.log"), "w")
    ladder = subprocess.Popen([args.bin, "serve", "--config", config], stdout=ladder_log, stderr=subprocess.STDOUT)
    admin = f"http://127.0.0.1:{ports['admin']}"
    base = f"http://127.0.0.1:{ports['http']}"
    for _ in range(100):
        if http_get(f"{admin}/readyz")[0] == 200:
            break
        time.sleep(0.1)
    else:
        sys.exit("ladder did not become ready; see " + ladder_log.name)

    stop = threading.Event()
    stats = Stats()
    rng = random.Random(args.seed)
    threads = []
    for i in range(args.channels):
        url = f"rtmp://127.0.0.1:{ports['rtmp']}/live/soak-key-{i}"
        for target, a in ((publisher, ("ffmpeg", clip, url, f"soak{i}", stop, stats, random.Random(rng.random()))),
                          (hls_viewer, (base, f"soak{i}", stop, stats)),
                          (dash_viewer, (base, f"soak{i}", stop, stats))):
            t = threading.Thread(target=target, args=a, daemon=True)
            t.start()
            threads.append(t)

    samples = []
    csv_file = open(os.path.join(out, "samples.csv"), "w", newline="")
    writer = csv.writer(csv_file)
    writer.writerow(["t_s", "channels_live"] + FIGURES)
    start = time.time()
    failure = None
    next_sample = start + args.sample
    try:
        while time.time() - start < duration:
            if ladder.poll() is not None:
                failure = f"ladder exited with {ladder.returncode}"
                break
            time.sleep(max(0.0, min(next_sample - time.time(), 5)))
            if time.time() < next_sample:
                continue
            next_sample += args.sample
            # a moment when every channel is live, within 20 s
            m = None
            for _ in range(40):
                m = metrics(admin)
                if m and m.get("ladder_channels_live", 0) >= args.channels:
                    break
                time.sleep(0.5)
            if not m:
                failure = "/metrics did not answer"
                break
            row = {"t": time.time() - start, "live": m.get("ladder_channels_live")}
            for f in FIGURES:
                row[f] = m.get(f)
            samples.append(row)
            writer.writerow([f"{row['t']:.0f}", row["live"]] + [row[f] for f in FIGURES])
            csv_file.flush()
            log(f"t={row['t'] / 60:.1f} min live={row['live']:.0f} rss={row[FIGURES[0]] / 2**20:.1f} MiB "
                f"fds={row[FIGURES[1]]:.0f} threads={row[FIGURES[2]]:.0f} tasks={row[FIGURES[3]]:.0f}")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=20)
        ladder.send_signal(signal.SIGTERM)
        try:
            code = ladder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            ladder.kill()
            code = "killed after 30 s"
        if nginx:
            nginx.terminate()
            nginx.wait()

    lines = [f"soak: {args.channels} channels, {args.minutes:g} min, {len(samples)} samples, warm-up {warmup:g} s",
             f"ladder: {args.bin}; exit after SIGTERM: {code}"]
    lines.append("activity: " + ", ".join(f"{k}={v}" for k, v in sorted(stats.counts.items())))
    ok = failure is None
    if failure:
        lines.append(f"FAILED: {failure}")
    for f in FIGURES:
        d = drift(samples, f, warmup)
        if d is None:
            lines.append(f"{f}: too few samples after warm-up")
            ok = False
            continue
        base, final, rel = d
        verdict = "ok" if abs(rel) <= DRIFT_LIMIT else "DRIFT"
        ok = ok and verdict == "ok"
        lines.append(f"{f}: {base:.0f} -> {final:.0f} ({rel * 100:+.2f}%) {verdict}")
    if stats.counts.get("protocol_errors"):
        ok = False
        lines.append("viewer errors:")
        lines += ["  " + e for e in stats.errors]
    lines.append("PASS" if ok else "FAIL")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text)
    print(text, end="")
    os.remove(clip)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
