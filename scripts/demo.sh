#!/bin/bash
# make demo: ladder serve on the embedded default, an ffmpeg test pattern
# published to it, the playback URLs printed. Ctrl-C stops everything.
set -euo pipefail
bin=${1:-target/release/ladder}
key=${DEMO_KEY:-demo}
host=${DEMO_HOST:-127.0.0.1}

cleanup() { kill "${ffmpeg_pid:-}" "${ladder_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# the embedded default (open mode, RTMP on 1935, HTTP on 8080), written out so
# that an installed /etc/ladder/ladder.toml does not take its place
mkdir -p target/demo
"$bin" config --default > target/demo/ladder.toml
"$bin" serve --config target/demo/ladder.toml &
ladder_pid=$!
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/1935) 2>/dev/null && break
  kill -0 $ladder_pid 2>/dev/null || { echo "ladder did not start (is port 1935 or 8080 in use?)" >&2; exit 1; }
  sleep 0.2
done

if command -v ffmpeg >/dev/null; then
  ffmpeg -hide_banner -loglevel warning -re \
    -f lavfi -i "testsrc2=size=1280x720:rate=30" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -c:v libx264 -preset veryfast -tune zerolatency -profile:v high -g 60 -keyint_min 60 -sc_threshold 0 -b:v 3M \
    -c:a aac -b:a 128k -ac 2 \
    -f flv "rtmp://127.0.0.1:1935/live/$key" &
  ffmpeg_pid=$!
  echo
  echo "Publishing a test pattern to rtmp://$host:1935/live/$key"
else
  echo "ffmpeg is not installed: publish to rtmp://$host:1935/live/$key yourself"
fi
cat <<MSG

  LL-HLS:  http://$host:8080/live/$key/master.m3u8
  LL-DASH: http://$host:8080/live/$key/manifest.mpd

  Try:     ffplay http://$host:8080/live/$key/master.m3u8
           curl -s http://$host:8080/live/$key/master.m3u8

Ctrl-C to stop.
MSG
wait $ladder_pid
