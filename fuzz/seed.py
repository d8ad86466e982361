#!/usr/bin/env python3
"""Builds the seed corpus of fuzz/corpus/ from real peers (fuzz/README.md).

- rtmp_handshake, rtmp_chunks, rtmp_session: the bytes ffmpeg sends when it
  publishes to nginx-rtmp, captured by a relay between them.
- rtmp_client: the bytes nginx-rtmp sends to ffmpeg playing that stream.
- flv: the audio and video tags of an FLV file ffmpeg wrote (x264 + AAC), in
  the target's message framing.
- avc, hevc, av1, aac: the avcC, hvcC, av1C and AudioSpecificConfig records
  of files ffmpeg encoded with libx264, libx265, libsvtav1/libaom and aac,
  and the parameter set NAL units in them.
- amf0: the AMF0 payloads of the captured commands and metadata.
- hls_query, config: written here by hand (a few typical requests; the
  embedded default configuration and the example in the repository).

Each seed starts with one byte for the stream targets' read lengths (see
src/fuzzing.rs). Run from the repository root: python3 fuzz/seed.py
Needs ffmpeg and nginx with its RTMP module (make deps installs them).
"""

import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
NGINX = "/usr/sbin/nginx"
RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
HANDSHAKE = 1 + 1536 + 1536


def save(target, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


class Relay:
    """Accepts one connection on a free port, relays it to `upstream`, and keeps
    what each side sent."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.from_client = bytearray()
        self.from_server = bytearray()
        threading.Thread(target=self._serve, daemon=True).start()

    def _pump(self, src, dst, buf):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                buf.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _serve(self):
        client, _ = self.sock.accept()
        server = socket.create_connection(("127.0.0.1", self.upstream))
        threading.Thread(target=self._pump, args=(server, client, self.from_server), daemon=True).start()
        self._pump(client, server, self.from_client)


def start_nginx(tmp, port):
    os.makedirs(os.path.join(tmp, "logs"), exist_ok=True)
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(
            f"""load_module {RTMP_MODULE};
daemon off; master_process off; pid {tmp}/nginx.pid; error_log {tmp}/logs/error.log;
events {{ worker_connections 64; }}
rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;
  application live {{ live on; record off; }} }} }}
"""
        )
    return subprocess.Popen([NGINX, "-p", tmp, "-c", conf], stderr=subprocess.DEVNULL)


def wait_port(port, deadline=10):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"port {port} never opened")


def capture_rtmp(tmp, flv):
    """ffmpeg publishes `flv` to nginx through a relay; a second ffmpeg plays it
    through another. Returns (publisher bytes, nginx bytes to the player)."""
    port = free_port()
    nginx = start_nginx(tmp, port)
    try:
        wait_port(port)
        pub_relay = Relay(port)
        publisher = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "2", "-i", flv,
             "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{pub_relay.port}/live/seedkey"])
        time.sleep(1.0)
        play_relay = Relay(port)
        player = subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-t", "2",
             "-i", f"rtmp://127.0.0.1:{play_relay.port}/live/seedkey", "-c", "copy", "-f", "null", "-"],
            timeout=30)
        del player
        publisher.wait(timeout=60)
        time.sleep(0.3)
        return bytes(pub_relay.from_client), bytes(play_relay.from_server)
    finally:
        nginx.terminate()
        nginx.wait()


def flv_tags(path):
    """(type, timestamp ms, body) of each tag of an FLV file."""
    data = open(path, "rb").read()
    offset = struct.unpack(">I", data[5:9])[0] + 4
    tags = []
    while offset + 11 <= len(data):
        kind = data[offset]
        size = int.from_bytes(data[offset + 1:offset + 4], "big")
        ts = int.from_bytes(data[offset + 4:offset + 7], "big") | (data[offset + 7] << 24)
        body = data[offset + 11:offset + 11 + size]
        tags.append((kind, ts, body))
        offset += 11 + size + 4
    return tags


def mp4_box(data, fourcc):
    """The payload of the first box named `fourcc` (found by its name, which is
    enough for the sample entries of a file ffmpeg wrote)."""
    i = data.find(fourcc.encode())
    if i < 4:
        sys.exit(f"no {fourcc} box")
    size = struct.unpack(">I", data[i - 4:i])[0]
    return data[i + 4:i - 4 + size]


def nal_units(record_payloads):
    return [n for n in record_payloads if n]


def main():
    if os.path.isdir(CORPUS) and "--force" not in sys.argv:
        sys.exit("fuzz/corpus exists; pass --force to add to it")
    tmp = tempfile.mkdtemp(prefix="ladder-seed-")
    try:
        src = ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-f", "lavfi",
               "-i", "sine=frequency=440:sample_rate=48000", "-t", "2"]
        flv = os.path.join(tmp, "a.flv")
        ffmpeg(*src, "-c:v", "libx264", "-g", "30", "-bf", "2", "-c:a", "aac", flv)

        # flv: messages of the target's framing, a few tags per seed.
        tags = [t for t in flv_tags(flv) if t[0] in (8, 9)]
        for start in range(0, min(len(tags), 40), 8):
            out = bytearray()
            prev = tags[start][1]
            for kind, ts, body in tags[start:start + 8]:
                out += bytes([1 if kind == 8 else 0]) + struct.pack(">HH", (ts - prev) & 0xFFFF, len(body))
                out += body
                prev = ts
            save("flv", bytes(out))
        # avc: the avcC and its SPS and PPS; aac: the AudioSpecificConfig.
        for kind, _, body in tags:
            if kind == 9 and body[1] == 0:
                avcc = body[5:]
                save("avc", avcc)
                sps_len = struct.unpack(">H", avcc[6:8])[0]
                save("avc", avcc[8:8 + sps_len])
                pps = avcc[8 + sps_len + 1:]
                save("avc", pps[2:2 + struct.unpack(">H", pps[:2])[0]])
            if kind == 9 and body[1] == 1:
                save("avc", body[5:5 + 600])
                break
        for kind, _, body in tags:
            if kind == 8 and body[1] == 0:
                save("aac", body[2:])
                break
        ffmpeg("-f", "lavfi", "-i", "sine=sample_rate=44100", "-ac", "1", "-t", "0.2", "-c:a", "aac",
               os.path.join(tmp, "m.mp4"))
        save("aac", mp4_box(open(os.path.join(tmp, "m.mp4"), "rb").read(), "esds")[-7:-5])

        # hevc and av1: the records of files written by the real encoders.
        hevc = os.path.join(tmp, "h.mp4")
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-t", "0.5", "-c:v", "libx265",
               "-x265-params", "log-level=error", "-tag:v", "hvc1", hevc)
        hvcc = mp4_box(open(hevc, "rb").read(), "hvcC")
        save("hevc", hvcc)
        i, arrays = 23, hvcc[22]
        for _ in range(arrays):
            count = struct.unpack(">H", hvcc[i + 1:i + 3])[0]
            i += 3
            for _ in range(count):
                n = struct.unpack(">H", hvcc[i:i + 2])[0]
                save("hevc", hvcc[i + 2:i + 2 + n])
                i += 2 + n
        av1 = os.path.join(tmp, "a.mp4")
        for enc in ("libsvtav1", "libaom-av1", "libdav1d"):
            try:
                ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-t", "0.3", "-c:v", enc,
                       *(["-cpu-used", "8"] if enc == "libaom-av1" else []), av1)
                break
            except subprocess.CalledProcessError:
                continue
        av1c = mp4_box(open(av1, "rb").read(), "av1C")
        save("av1", av1c)
        save("av1", av1c[4:])
        save("av1", bytes([1]) + av1c[4:])

        # RTMP, from the real peers.
        publisher, server = capture_rtmp(tmp, flv)
        if len(publisher) <= HANDSHAKE or len(server) <= HANDSHAKE:
            sys.exit("the RTMP capture is too short")
        save("rtmp_handshake", bytes([0]) + publisher[:HANDSHAKE])
        save("rtmp_handshake", bytes([7]) + publisher[:HANDSHAKE + 400])
        session = publisher[HANDSHAKE:]
        for seed, cut in ((0, 2048), (91, 8192), (200, 32768)):
            save("rtmp_session", bytes([seed]) + session[:cut])
            save("rtmp_chunks", bytes([seed]) + session[:cut])
        for seed, cut in ((1, 4096), (77, 16384)):
            save("rtmp_client", bytes([seed]) + server[HANDSHAKE:HANDSHAKE + cut])
        save("rtmp_client", bytes([0]) + server[HANDSHAKE:HANDSHAKE + 4096])
        # amf0: the command and data bodies in the first kilobytes, found by
        # their first value (a string: marker 2, a length, the name).
        for name in (b"connect", b"releaseStream", b"FCPublish", b"createStream", b"publish",
                     b"@setDataFrame", b"onStatus", b"_result"):
            for stream in (session, server):
                i = stream.find(b"\x02" + struct.pack(">H", len(name)) + name)
                if i >= 0:
                    save("amf0", stream[i:i + 600])

        # hls_query: request targets as players send them.
        for target in (b"/live/main/hls/0/media.m3u8?_HLS_msn=12&_HLS_part=3",
                       b"/live/main/hls/1/media.m3u8?_HLS_msn=7&_HLS_skip=YES",
                       b"/live/main/index.m3u8?token=1700000000-0123456789abcdef",
                       b"/live/main/dash/manifest.mpd", b"/live/main/hls/0/part-123.m4s",
                       b"/live/main/hls/0/seg-45.m4s", b"/live/main/hls/0/init.mp4", b"/time"):
            save("hls_query", target)
        # config: the embedded default and the packaged example.
        for path in ("src/control/default.toml", "packaging/ladder.toml"):
            full = os.path.join(ROOT, path)
            if os.path.exists(full):
                save("config", open(full, "rb").read())
        save("config", b"rtmp://a.rtmp.youtube.com/live2/KEY\nrtmps://live-api-s.facebook.com:443/rtmp/KEY\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for t in sorted(os.listdir(CORPUS)):
        print(t, len(os.listdir(os.path.join(CORPUS, t))))


if __name__ == "__main__":
    main()
