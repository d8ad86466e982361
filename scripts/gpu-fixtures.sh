#!/usr/bin/env bash
# Makes the H.264 streams of the GPU self-test (tests/fixtures/gpu/*.flv) with
# ffmpeg + libx264. Run once; the FLV files are committed. Their references
# (*.md5: every decoded picture's I420 md5, by libavcodec) are written by
#   LADDER_WRITE_GPU_REFERENCES=1 cargo test --lib gpu_references
# and checked by that test in `make test` (docs/GPU-TESTS.md).
set -euo pipefail
cd "$(dirname "$0")/../tests/fixtures/gpu"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

enc() { # name size frames x264-profile x264-params
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=$2:rate=25" \
    -frames:v "$3" -pix_fmt yuv420p -c:v libx264 -preset medium -crf 30 \
    -profile:v "$4" -x264-params "$5" -an -f flv "$6"
}

enc baseline 320x240 50 baseline "keyint=25:min-keyint=25:scenecut=0" baseline.flv
enc main 320x240 50 main "keyint=25:min-keyint=25:scenecut=0:cabac=1:bframes=0" main-cabac.flv
enc high 320x240 50 high "keyint=25:min-keyint=25:scenecut=0:bframes=3:b-pyramid=normal:8x8dct=1" high-bframes.flv

# A publisher that changes picture size twice: three streams spliced into one
# FLV, each starting with its own AVC sequence header. 480x270 and 240x180 are
# not multiples of 16 (the SPS crops). Up then down: NVDEC re-creates its
# decoder for the larger size and reconfigures it for the smaller one.
params="keyint=12:min-keyint=12:scenecut=0:bframes=2"
enc a 320x240 24 high "$params" "$tmp/a.flv"
enc b 480x270 24 high "$params" "$tmp/b.flv"
enc c 240x180 24 high "$params" "$tmp/c.flv"
python3 - "$tmp/a.flv" "$tmp/b.flv" "$tmp/c.flv" size-change.flv <<'PY'
import struct, sys
*inputs, output = sys.argv[1:]
out = bytearray(b"FLV\x01\x01\x00\x00\x00\x09" + b"\x00\x00\x00\x00")
offset = 0
for n, path in enumerate(inputs):
    data = open(path, "rb").read()
    at = struct.unpack(">I", data[5:9])[0] + 4
    last = 0
    while at + 11 <= len(data):
        kind = data[at]
        size = int.from_bytes(data[at + 1:at + 4], "big")
        ts = int.from_bytes(data[at + 4:at + 7], "big") | data[at + 7] << 24
        body = data[at + 11:at + 11 + size]
        at += 11 + size + 4
        if kind == 18 and n > 0:
            continue  # onMetaData: only the first
        t = ts + offset
        last = max(last, t)
        out += bytes([kind]) + size.to_bytes(3, "big") + (t & 0xFFFFFF).to_bytes(3, "big")
        out += bytes([t >> 24 & 0xFF, 0, 0, 0]) + body + struct.pack(">I", 11 + size)
    offset = last + 40
open(output, "wb").write(out)
PY
ls -l *.flv
