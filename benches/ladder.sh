#!/usr/bin/env bash
# CPU ladder vs ffmpeg doing the same work in one process (issue 3).
#
# Same input, same ladder on both sides: 1080p 6000k, 720p 3000k, 480p 1200k,
# 360p 700k, x264 veryfast + zerolatency, IDR every 60 frames (ffmpeg) / at the
# source's IDRs (Ladder, the source has one every 60 frames).
#  - ffmpeg: ONE process decodes the clip, splits, scales and encodes four rungs
#    into four files (as fast as it can). CPU = ru_utime + ru_stime of that process,
#    peak RSS = ru_maxrss (python3 getrusage(RUSAGE_CHILDREN)).
#  - Ladder: `ladder serve` (CPU backend), the clip published slower than real
#    time (`ffmpeg -readrate $READRATE -c copy -f flv`, default 0.5: half speed),
#    so that a box too slow for the ladder in real time does not make Ladder drop
#    pictures (a rung that drops does less work than ffmpeg, and its CPU figure
#    is then not comparable). Content seconds stay the clip's media time. Every
#    drop is still counted and reported, and the run is flagged INVALID when any
#    rung or the decoder dropped. After every rung has logged "rung ended", the
#    server's utime + stime (/proc/PID/stat) and VmHWM (/proc/PID/status) are read
#    before it is stopped. Each rung is downloaded (init + every listed segment).
#    Run twice: four encoded rungs, then source passthrough + 720p/480p/360p.
#  - PSNR of every rung against the source (ffmpeg psnr, reference scaled bicubic
#    to the rung's size, frames matched by index).
# CPU is reported per content second (CPU s / clip s).
#
# usage: benches/ladder.sh LADDER_BIN
# env:   DUR (clip seconds, default 20), READRATE (publishing speed, a multiple
#        of real time, default 0.5; 1 = real time, what `-re` does),
#        BENCH_INPUT_DIR (input cache, default $CARGO_TARGET_DIR or ./target,
#        + /bench-input), SKIP_VARIANT_PSNR=1
# Run by `cargo bench --bench ladder`. Loopback only; everything it starts is
# stopped on exit (trap).
set -euo pipefail

LADDER=${1:?usage: $0 LADDER_BIN}
DUR=${DUR:-20}
READRATE=${READRATE:-0.5}
FPS=30
repo=$(cd "$(dirname "$0")/.." && pwd)
INPUT_DIR=${BENCH_INPUT_DIR:-${CARGO_TARGET_DIR:-$repo/target}/bench-input}
TICK=$(getconf CLK_TCK)

dir=$(mktemp -d /tmp/ladder-bench-ladder.XXXXXX)
server_pid=""
pub_pid=""
sampler_pid=""
stop_publisher() {
	if [ -n "$pub_pid" ]; then
		kill "$pub_pid" 2>/dev/null || true
		wait "$pub_pid" 2>/dev/null || true
		pub_pid=""
	fi
}
stop_server() {
	if [ -n "$server_pid" ]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
		server_pid=""
	fi
}
cleanup() {
	stop_publisher
	stop_server
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for t in ffmpeg ffprobe curl python3; do
	command -v "$t" >/dev/null || { echo "$t is required" >&2; exit 1; }
done

# A free loopback TCP port.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
frames() { ffprobe -v error -select_streams v:0 -count_packets -show_entries stream=nb_read_packets -of csv=p=0 "$1"; }

# The input: 1080p30 x264 High, 8 Mbit/s, IDR every 60 frames, 2 B-frames, AAC 128k.
mkdir -p "$INPUT_DIR"
src="$INPUT_DIR/ladder-1080p30-${DUR}s.mp4"
if [ ! -s "$src" ]; then
	echo "making $src ..."
	ffmpeg -hide_banner -loglevel error -nostdin -y \
		-f lavfi -i "testsrc2=size=1920x1080:rate=$FPS:duration=$DUR" \
		-f lavfi -i "sine=frequency=440:sample_rate=48000:duration=$DUR" \
		-c:v libx264 -preset medium -profile:v high -b:v 8M -g 60 -keyint_min 60 \
		-sc_threshold 0 -bf 2 -pix_fmt yuv420p -c:a aac -b:a 128k -ar 48000 \
		-movflags +faststart "$src.tmp.mp4"
	mv "$src.tmp.mp4" "$src"
fi
src_frames=$(frames "$src")

RUNGS=(1080 720 480 360)
declare -A KBPS=([1080]=6000 [720]=3000 [480]=1200 [360]=700)

echo "== CPU ladder vs ffmpeg: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
echo "input: $src ($src_frames frames, ${DUR} s); Ladder's publisher at ${READRATE}x real time"

results="$dir/results" # side rung psnr frames
summary="$dir/summary" # side cpu_s rss_kb

# PSNR of a rung file against the source, reference scaled bicubic to the rung's
# size. Frames are paired by time slot: both sides re-timed from their first
# frame and rounded to the 1/30 s grid, so a picture a rung dropped is skipped,
# not paired with the wrong one. SHIFT drops that many frames from the start of
# the reference (rung slot k against source frame k + SHIFT). The average is the
# PSNR of the mean per-frame MSE (ffmpeg's own "average"), over every pair but
# the first, so that shift 0 and shift 1 average over the same pairs.
# Prints "PSNR PAIRS".
slot="setpts=round((PTS-STARTPTS)*TB*$FPS)/($FPS*TB)"
psnr() { # file width height shift
	local f=$1 w=$2 h=$3 shift=$4
	ffmpeg -hide_banner -nostdin -i "$f" -i "$src" -lavfi \
		"[0:v]$slot[d];[1:v]trim=start_frame=$shift,$slot,scale=$w:$h:flags=bicubic[r];[d][r]psnr=shortest=1:stats_file=$dir/psnr.txt" \
		-f null - >/dev/null 2>&1
	awk 'NR > 1 { sub(/^mse_avg:/, "", $2); s += $2; n++ }
		END { if (n && s > 0) printf "%.2f %d\n", 10 * log(255 * 255 / (s / n)) / log(10), n; else print "nan 0" }' "$dir/psnr.txt"
}
dims() { ffprobe -v error -select_streams v:0 -show_entries stream=width,height -of csv=p=0:s=x "$1" | tr x ' '; }

# Score one rung: frame count, PSNR with the reference aligned at its first
# frame and shifted by one frame; the better of the two is taken (by more than
# 1 dB: a misaligned moving test pattern scores about 20 dB lower), and said.
score() { # side rung file
	local side=$1 rung=$2 f=$3 n w h p0 n0 p1 n1 p shift
	n=$(frames "$f")
	read -r w h < <(dims "$f")
	read -r p0 n0 < <(psnr "$f" "$w" "$h" 0)
	read -r p1 n1 < <(psnr "$f" "$w" "$h" 1)
	p=$p0
	shift=0
	if awk -v a="$p1" -v b="$p0" 'BEGIN { exit !(a > b + 1) }'; then
		p=$p1
		shift=1
	fi
	echo "  $side ${rung}p: ${w}x${h}, $n frames (source $src_frames); PSNR $p0 dB at shift 0 ($n0 pairs), $p1 dB at shift 1 ($n1 pairs): taken at shift $shift"
	echo "$side $rung $p $n $shift" >>"$results"
}

# ---- ffmpeg: one process, four rungs -------------------------------------
x264=(-preset veryfast -tune zerolatency -g 60 -keyint_min 60 -sc_threshold 0)
echo "ffmpeg: one process, 4 rungs ..."
python3 - "$dir/ffmpeg.rusage" ffmpeg -hide_banner -loglevel error -nostdin -y -i "$src" \
	-filter_complex "[0:v]split=4[a][b][c][d];[b]scale=-2:720[b1];[c]scale=-2:480[c1];[d]scale=-2:360[d1]" \
	-map "[a]" -c:v libx264 -b:v 6M "${x264[@]}" -map 0:a -c:a copy "$dir/ff-1080.mp4" \
	-map "[b1]" -c:v libx264 -b:v 3M "${x264[@]}" "$dir/ff-720.mp4" \
	-map "[c1]" -c:v libx264 -b:v 1200k "${x264[@]}" "$dir/ff-480.mp4" \
	-map "[d1]" -c:v libx264 -b:v 700k "${x264[@]}" "$dir/ff-360.mp4" <<'EOF'
import resource, subprocess, sys, time
t0 = time.monotonic()
rc = subprocess.run(sys.argv[2:]).returncode
wall = time.monotonic() - t0
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{r.ru_utime + r.ru_stime:.2f} {r.ru_maxrss} {wall:.1f}\n")
sys.exit(rc)
EOF
read -r ff_cpu ff_rss ff_wall <"$dir/ffmpeg.rusage"
echo "  ffmpeg: CPU $ff_cpu s (wall $ff_wall s), peak RSS $((ff_rss / 1024)) MiB"
# megapixels the full ladder encodes (every source frame at every rung's size)
ff_mp=$(for r in "${RUNGS[@]}"; do dims "$dir/ff-$r.mp4"; done | awk -v n="$src_frames" '{ s += $1 * $2 * n } END { printf "%.1f", s / 1e6 }')
echo "ffmpeg $ff_cpu $ff_rss $((4 * src_frames)) $((4 * src_frames)) $ff_mp $ff_mp" >>"$summary"
for r in "${RUNGS[@]}"; do score ffmpeg "$r" "$dir/ff-$r.mp4"; done

# ---- Ladder ---------------------------------------------------------------
run_ladder() { # side renditions-toml want_rungs(encoded heights) do_psnr
	local side=$1 renditions=$2 want=$3 do_psnr=$4 rtmp="" http="" t ended rss r
	local rport hport aport
	rport=$(free_port)
	hport=$(free_port)
	aport=$(free_port)
	cat >"$dir/$side.toml" <<EOF
[server]
rtmp_listen  = "127.0.0.1:$rport"
http_listen  = "127.0.0.1:$hport"
admin_listen = "127.0.0.1:$aport"
[auth]
open = true
[packaging]
segment_seconds = 2.0
part_seconds = 0.5
window_segments = 30
[ladders.default]
backend = "cpu"
renditions = [ $renditions ]
EOF
	: >"$dir/$side.log"
	NO_COLOR=1 RUST_LOG=info "$LADDER" serve --config "$dir/$side.toml" 2>>"$dir/$side.log" >>"$dir/$side.log" &
	server_pid=$!
	for _ in $(seq 200); do
		rtmp=$(grep -o 'rtmp=[0-9.:]*' "$dir/$side.log" | head -1 | cut -d= -f2 || true)
		http=$(grep -o 'http=[0-9.:]*' "$dir/$side.log" | head -1 | cut -d= -f2 || true)
		[ -n "$rtmp" ] && [ -n "$http" ] && break
		sleep 0.1
	done
	[ -n "$rtmp" ] || { echo "ladder did not start" >&2; cat "$dir/$side.log" >&2; exit 1; }
	echo "ladder ($side): publishing ${DUR} s at ${READRATE}x real time to rtmp://$rtmp/live/bench ..."
	# CPU per thread, sampled every second (rung threads exit before the end).
	(while kill -0 "$server_pid" 2>/dev/null; do
		cat /proc/"$server_pid"/task/*/stat 2>/dev/null >>"$dir/$side.threads" || true
		sleep 1
	done) &
	sampler_pid=$!
	ffmpeg -hide_banner -loglevel error -nostdin -readrate "$READRATE" -i "$src" -c copy -f flv \
		"rtmp://$rtmp/live/bench" &
	pub_pid=$!
	wait "$pub_pid" || echo "  publisher exited with status $?"
	pub_pid=""
	ended=0
	for _ in $(seq 600); do
		ended=$(grep -c 'rung ended' "$dir/$side.log" || true)
		[ "$ended" -ge "$want" ] && break
		sleep 0.1
	done
	t=$(cpu_ticks "$server_pid")
	rss=$(hwm_kb "$server_pid")
	[ "$ended" -ge "$want" ] || echo "  only $ended of $want 'rung ended' lines after 60 s"
	grep 'rung ended' "$dir/$side.log" | sed 's/^.*rung=/  rung=/' || true
	grep 'decode ended' "$dir/$side.log" | sed 's/^.*access_units=/  decode: access_units=/' || true
	grep -E 'WARN|ERROR' "$dir/$side.log" | head -5 | sed 's/^/  log: /' || true
	local cpu
	cpu=$(awk -v t="$t" -v k="$TICK" 'BEGIN { printf "%.2f", t / k }')
	echo "  ladder ($side): CPU $cpu s, peak RSS (VmHWM) $((rss / 1024)) MiB"
	cat /proc/"$server_pid"/task/*/stat 2>/dev/null >>"$dir/$side.threads" || true
	kill "$sampler_pid" 2>/dev/null || true
	wait "$sampler_pid" 2>/dev/null || true
	# Last sample of each thread, CPU seconds summed by thread name.
	awk -v k="$TICK" '{ tid = $1; name = $0; sub(/^[^(]*\(/, "", name); sub(/\).*/, "", name)
			rest = $0; sub(/.*\) /, "", rest); split(rest, f, " ")
			cpu[tid] = (f[12] + f[13]) / k; comm[tid] = name }
		END { for (t in cpu) by[comm[t]] += cpu[t]
			printf "  CPU by thread name:"; for (n in by) if (by[n] >= 0.05) printf " %s %.1f s;", n, by[n]; printf "\n" }' "$dir/$side.threads"
	local enc
	enc=$(grep 'rung ended' "$dir/$side.log" | grep -o ' encoded=[0-9]*' | cut -d= -f2 | awk '{ s += $1 } END { print s + 0 }')
	local mp full
	mp=$(grep 'rung ended' "$dir/$side.log" | sed -E 's/.*size="([0-9]+)x([0-9]+)".* encoded=([0-9]+).*/\1 \2 \3/' |
		awk '{ s += $1 * $2 * $3 } END { printf "%.1f", s / 1e6 }')
	full=$(grep 'rung ended' "$dir/$side.log" | sed -E 's/.*size="([0-9]+)x([0-9]+)".*/\1 \2/' |
		awk -v n="$src_frames" '{ s += $1 * $2 * n } END { printf "%.1f", s / 1e6 }')
	echo "$side $cpu $rss $enc $((want * src_frames)) $mp $full" >>"$summary"
	grep 'rung ended' "$dir/$side.log" | grep -o 'rung=[^ ]*\|dropped_queue_full=[0-9]*\|dropped_fps_cap=[0-9]*' |
		paste -d' ' - - - | sed "s/^/$side /" >>"$dir/drops"
	# The decoder's drops (access units, DropUntilKeyframe) are logged apart.
	grep 'decoder fell behind' "$dir/$side.log" | grep -o 'dropped=[0-9]*' | sed "s/^/$side decoder /" >>"$dir/drops" || true
	# Download each encoded rung: init + every listed segment.
	for r in "${RUNGS[@]}"; do
		curl -sf "http://$http/live/bench/${r}p/index.m3u8" -o "$dir/$side-$r.m3u8" || continue
		local init
		init=$(grep -o '#EXT-X-MAP:URI="[^"]*"' "$dir/$side-$r.m3u8" | cut -d'"' -f2)
		curl -sf "http://$http/live/bench/${r}p/$init" -o "$dir/$side-$r.mp4"
		local nseg=0 first=""
		for s in $(grep -v '^#' "$dir/$side-$r.m3u8" | grep 'seg-'); do
			[ -n "$first" ] || first=$s
			curl -sf "http://$http/live/bench/${r}p/$s" >>"$dir/$side-$r.mp4"
			nseg=$((nseg + 1))
		done
		echo "  ${r}p: $nseg segments (first $first)"
		[ "$do_psnr" = 1 ] && score "$side" "$r" "$dir/$side-$r.mp4"
	done
	stop_server
}

enc() { echo "{ name = \"${1}p\", height = $1, bitrate_kbps = ${KBPS[$1]}, preset = \"veryfast\" }"; }
run_ladder ladder4 "$(enc 1080), $(enc 720), $(enc 480), $(enc 360)" 4 1
vpsnr=1
[ "${SKIP_VARIANT_PSNR:-0}" = 1 ] && vpsnr=0
run_ladder ladder_pt "{ name = \"source\", passthrough = true }, $(enc 720), $(enc 480), $(enc 360)" 3 "$vpsnr"

# ---- table ----------------------------------------------------------------
# Sides on which any rung (dropped_queue_full) or the decoder dropped: their
# CPU, RSS and PSNR are not comparable with ffmpeg's (less work was done).
invalid=$(awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^dropped(_queue_full)?=[1-9]/) bad[$1] = 1 }
	END { for (s in bad) printf "%s ", s }' "$dir/drops" 2>/dev/null || true)
echo
echo "== results (clip ${DUR} s; CPU s per content s; RSS = peak; PSNR dB per rung)"
awk -v dur="$DUR" -v invalid="$invalid" '
	FILENAME ~ /summary$/ { cpu[$1] = $2 / dur; rss[$1] = $3 / 1024; enc[$1] = $4; want[$1] = $5; ms[$1] = $4 ? 1000 * $2 / $4 : 0; mpms[$1] = $6 ? 1000 * $2 / $6 : 0; est[$1] = $6 ? $2 / $6 * $7 / dur : 0; next }
	FILENAME ~ /results$/ { p[$1" "$2] = $3; next }
	END {
		split("ffmpeg ladder4 ladder_pt", sides, " ")
		split("1080 720 480 360", rungs, " ")
		printf "| %-26s | %8s | %9s | %7s | %7s | %7s | %7s |\n", "", "CPU s/s", "RSS MiB", "1080p", "720p", "480p", "360p"
		for (i = 1; i <= 3; i++) {
			s = sides[i]
			name = s == "ffmpeg" ? "ffmpeg (4 rungs, 1 process)" : s == "ladder4" ? "Ladder (4 encoded)" : "Ladder (passthrough + 3)"
			printf "| %-26s | %8.3f | %9.1f |", name, cpu[s], rss[s]
			for (j = 1; j <= 4; j++) {
				k = s" "rungs[j]
				if (k in p) printf " %7.2f |", p[k]; else printf " %7s |", (s == "ladder_pt" && j == 1) ? "source" : "-"
			}
			printf "\n"
		}
		c4 = cpu["ladder4"] / cpu["ffmpeg"]; r4 = rss["ladder4"] / rss["ffmpeg"]; cp = cpu["ladder_pt"] / cpu["ffmpeg"]
		printf "\ntargets:\n"
		printf "  CPU, 4 encoded rungs:  Ladder/ffmpeg %.2fx (target <= 0.85x): %s\n", c4, c4 <= 0.85 ? "met" : "MISSED"
		printf "  peak RSS, 4 encoded:   Ladder/ffmpeg %.2fx (target <= 0.75x): %s\n", r4, r4 <= 0.75 ? "met" : "MISSED"
		for (j = 1; j <= 4; j++) {
			k = "ladder4 "rungs[j]; f = "ffmpeg "rungs[j]
			if ((k in p) && (f in p)) { d = p[k] - p[f]; printf "  PSNR %5sp:            Ladder - ffmpeg %+.2f dB (target >= -0.10): %s\n", rungs[j], d, (d >= -0.1) ? "met" : "MISSED" }
		}
		printf "  CPU, passthrough + 3:  Ladder/ffmpeg(4 rungs) %.2fx (target <= 0.5x): %s\n", cp, cp <= 0.5 ? "met" : "MISSED"
		printf "  passthrough + 3 RSS:   Ladder/ffmpeg %.2fx\n", rss["ladder_pt"] / rss["ffmpeg"]
		printf "\npictures encoded (all encoded rungs; fewer = dropped) and CPU ms per encoded picture:\n"
		for (i = 1; i <= 3; i++) printf "  %-10s %5d of %5d, %.1f ms per picture, %.1f ms per encoded megapixel; CPU s/s scaled to every picture (rough) %.3f\n", sides[i], enc[sides[i]], want[sides[i]], ms[sides[i]], mpms[sides[i]], est[sides[i]]
		printf "  drop-scaled ratios (rough): 4 encoded %.2fx, passthrough + 3 %.2fx\n", est["ladder4"] / est["ffmpeg"], est["ladder_pt"] / est["ffmpeg"]
		if (invalid != "") printf "\n  NOT VALID: Ladder dropped pictures (%s): the figures above compare less work with more.\n", invalid
	}' "$summary" "$results"
echo "drops (per rung, from the 'rung ended' log lines; the decoder's in access units):"
sed 's/^/  /' "$dir/drops" 2>/dev/null || true
echo "frames per rung (source $src_frames), and the reference shift the PSNR was taken at:"
awk '{ printf "  %s %sp: %s frames, shift %s\n", $1, $2, $4, $5 }' "$results"
if [ -n "$invalid" ]; then
	echo
	echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
	echo "!! INVALID RUN: Ladder dropped pictures in: $invalid"
	echo "!! A rung that drops encodes fewer pictures than ffmpeg: its CPU per content"
	echo "!! second, peak RSS and PSNR are not comparable. Publish slower (READRATE=0.25)"
	echo "!! or run on a less loaded machine."
	echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
fi
