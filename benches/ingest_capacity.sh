#!/usr/bin/env bash
# Ingest capacity, side by side: N concurrent low-bitrate RTMP publishers against
# Ladder (open mode, one key each) and then against nginx with the RTMP module
# (`live on;`), same N, same file. For each server: CPU time (utime+stime from
# /proc/PID/stat) over a fixed window, as CPU-ms per publisher-second, and VmRSS.
#
# usage: benches/ingest_capacity.sh LADDER_BIN [N ...]      (default N: 10 25 50)
# env:   WINDOW (s, default 20), WARMUP (s, default 5)
# Run by `cargo bench --bench ingest_capacity`. Loopback only; everything it
# starts is stopped on exit (trap).
set -euo pipefail

LADDER=${1:?usage: $0 LADDER_BIN [N ...]}
shift
NS=("$@")
[ ${#NS[@]} -gt 0 ] || NS=(10 25 50)
WINDOW=${WINDOW:-20}
WARMUP=${WARMUP:-5}
NGINX_MODULE=${NGINX_MODULE:-/usr/lib/nginx/modules/ngx_rtmp_module.so}
TICK_MS=$((1000 / $(getconf CLK_TCK)))

dir=$(mktemp -d /tmp/ladder-bench-ingest.XXXXXX)
server_pid=""
pub_pids=()
stop_publishers() {
	for p in "${pub_pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pub_pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pub_pids=()
}
stop_server() {
	if [ -n "$server_pid" ]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
		server_pid=""
	fi
}
cleanup() {
	stop_publishers
	stop_server
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v ffmpeg >/dev/null || { echo "ffmpeg is required" >&2; exit 1; }

# A free loopback TCP port.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# The publishers' file: 30 s, 320x240 30 fps H.264 at 200 kbit/s, 64 kbit/s AAC.
src="$dir/src.flv"
ffmpeg -hide_banner -loglevel error -f lavfi -i testsrc2=size=320x240:rate=30:duration=30 \
	-f lavfi -i sine=frequency=440:sample_rate=48000:duration=30 \
	-c:v libx264 -preset veryfast -b:v 200k -maxrate 200k -bufsize 400k \
	-g 60 -keyint_min 60 -sc_threshold 0 -pix_fmt yuv420p \
	-c:a aac -b:a 64k -ar 48000 -f flv "$src"

start_ladder() {
	cat >"$dir/ladder.toml" <<EOF
[server]
rtmp_listen  = "127.0.0.1:0"
http_listen  = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[auth]
open = true
[ingest]
max_publishers = 64
[ladders.default]
backend = "cpu"
renditions = [ { name = "source", passthrough = true } ]
EOF
	: >"$dir/ladder.log"
	NO_COLOR=1 RUST_LOG=info "$LADDER" serve --config "$dir/ladder.toml" 2>"$dir/ladder.log" &
	server_pid=$!
	for _ in $(seq 100); do
		rtmp=$(grep -o 'rtmp=[0-9.:]*' "$dir/ladder.log" | head -1 | cut -d= -f2 || true)
		[ -n "$rtmp" ] && break
		sleep 0.1
	done
	[ -n "$rtmp" ] || { echo "ladder did not start" >&2; cat "$dir/ladder.log" >&2; exit 1; }
	url="rtmp://$rtmp/live"
}

start_nginx() {
	local port
	port=$(free_port)
	mkdir -p "$dir/nginx/logs"
	cat >"$dir/nginx/nginx.conf" <<EOF
load_module $NGINX_MODULE;
daemon off;
master_process off;
worker_processes 1;
error_log $dir/nginx/logs/error.log warn;
pid $dir/nginx/nginx.pid;
events { worker_connections 1024; }
rtmp {
    server {
        listen 127.0.0.1:$port;
        chunk_size 4096;
        application live { live on; record off; }
    }
}
EOF
	nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" &
	server_pid=$!
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
		sleep 0.1
	done
	url="rtmp://127.0.0.1:$port/live"
}

measure() { # server N
	local server=$1 n=$2 i alive t0 t1 cpu_ms rss
	for i in $(seq "$n"); do
		ffmpeg -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i "$src" -c copy \
			-f flv "$url/pub$i" &
		pub_pids+=($!)
	done
	sleep "$WARMUP"
	t0=$(cpu_ticks "$server_pid")
	sleep "$WINDOW"
	t1=$(cpu_ticks "$server_pid")
	rss=$(rss_kb "$server_pid")
	alive=0
	for p in "${pub_pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
	cpu_ms=$(((t1 - t0) * TICK_MS))
	awk -v s="$server" -v n="$n" -v a="$alive" -v c="$cpu_ms" -v w="$WINDOW" -v r="$rss" 'BEGIN {
		printf "%-6s N=%-3d publishing=%-3d cpu %6d ms / %d s = %5.1f%% of a core, %.3f CPU-ms per publisher-second, VmRSS %.1f MiB\n",
			s, n, a, c, w, c / w / 10, c / (n * w), r / 1024 }'
	echo "$server $n $alive $cpu_ms $rss" >>"$dir/results"
	stop_publishers
}

echo "== ingest capacity: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), window ${WINDOW} s after ${WARMUP} s warm-up, $(date -u +%FT%TZ)"
for n in "${NS[@]}"; do
	start_ladder
	measure ladder "$n"
	stop_server
	if command -v nginx >/dev/null && [ -f "$NGINX_MODULE" ]; then
		start_nginx
		measure nginx "$n"
		stop_server
	else
		echo "nginx or its RTMP module ($NGINX_MODULE) is missing: apt-get install nginx libnginx-mod-rtmp"
	fi
done
if grep -q '^nginx' "$dir/results" 2>/dev/null; then
	awk '{ cpu[$1" "$2] = $4; rss[$1" "$2] = $5; n[$2] = 1 }
	END { for (k in n) if (cpu["nginx "k] > 0)
		printf "N=%-3d ladder/nginx: CPU %.2fx, RSS %.2fx\n", k, cpu["ladder "k] / cpu["nginx "k], rss["ladder "k] / rss["nginx "k] }' \
		"$dir/results" | sort -t= -k2 -n
fi
