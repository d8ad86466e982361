#!/bin/bash
# The package test (make test-package; make test runs it with CI=true). As root,
# on a Debian machine where no ladder package is installed:
#
#  1. dpkg -i the .deb; check its files (binary, config mode and owner, unit,
#     sysusers, tmpfiles, man page, completions), its dependencies, the user,
#     the generated publish key, and `systemd-analyze verify` on the unit;
#  2. run the installed binary the way the unit runs it (its ExecStart= as its
#     User=, with no new privileges, the unit's capability bounding set and
#     umask, a notification socket and a watchdog), on a copy of the installed
#     config with loopback ports chosen by the kernel (no systemd runs here);
#     check READY=1, WATCHDOG=1; publish with ffmpeg using the generated key
#     (a wrong key is refused), ffprobe the master playlist; SIGTERM, STOPPING=1,
#     exit 0;
#  3. reinstall: the key stays; an administrator's edit stays;
#  4. dpkg --purge: every file is gone (the ladder user stays, as Debian keeps
#     system users);
#  5. the .rpm: rpm -qlp lists the same files, the config is %config(noreplace).
#
# Usage: packaging/test-package.sh LADDER.deb LADDER.rpm
set -euo pipefail

DEB=${1:?usage: $0 LADDER.deb LADDER.rpm}
RPM=${2:?usage: $0 LADDER.deb LADDER.rpm}
CONFIG=/etc/ladder/ladder.toml
UNIT=/usr/lib/systemd/system/ladder.service
# Files the packages install (the .rpm's zsh completion is elsewhere; below).
FILES=(
	/usr/bin/ladder
	$CONFIG
	/usr/lib/ladder/setup-config
	$UNIT
	/usr/lib/sysusers.d/ladder.conf
	/usr/lib/tmpfiles.d/ladder.conf
	/usr/share/man/man1/ladder.1.gz
	/usr/share/bash-completion/completions/ladder
	/usr/share/fish/vendor_completions.d/ladder.fish
	/usr/share/doc/ladder/README.md
	/usr/share/doc/ladder/examples/nginx-edge.conf
)
DEB_ZSH=/usr/share/zsh/vendor-completions/_ladder
RPM_ZSH=/usr/share/zsh/site-functions/_ladder

step() { printf '\n== %s\n' "$*"; }
ok() { printf 'ok: %s\n' "$*"; }
fail() {
	printf 'FAIL: %s\n' "$*" >&2
	exit 1
}
# wait_for DESCRIPTION COMMAND...: until COMMAND succeeds. The deadline guards
# against a hang; nothing is asserted about how long it took.
wait_for() {
	local what=$1
	shift
	for _ in $(seq 1 600); do
		if "$@"; then return 0; fi
		sleep 0.1
	done
	fail "gave up waiting for $what"
}

# whether dpkg knows ladder in any state but not-installed (half-configured too)
present() {
	local status
	status=$(dpkg-query -W -f='${Status}' ladder 2>/dev/null || true)
	[ -n "$status" ] && [[ $status != *not-installed* ]]
}

[ "$(id -u)" = 0 ] || fail "run as root: the test installs and purges a package"
for f in "$DEB" "$RPM"; do [ -f "$f" ] || fail "no package at $f"; done
for tool in dpkg systemd-analyze setpriv ffmpeg ffprobe curl python3 rpm; do
	command -v $tool >/dev/null || fail "$tool is needed (make test-package installs what it can)"
done
if present; then
	fail "a ladder package is already installed; this test installs and purges its own (dpkg --purge ladder first)"
fi

WORK=$(mktemp -d /tmp/ladder-package-test.XXXXXX)
chmod 0755 "$WORK"
SERVER_PID= NOTIFY_PID= FFMPEG_PID=
cleanup() {
	local rc=$?
	for pid in $FFMPEG_PID $SERVER_PID $NOTIFY_PID; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ $rc -ne 0 ]; then
		[ -f "$WORK/server.log" ] && { echo "--- ladder log"; tail -n 40 "$WORK/server.log"; }
		if present; then
			echo "--- purging the package left by the failed test"
			dpkg --purge ladder >/dev/null 2>&1 || true
		fi
	fi
	rm -rf "$WORK"
	exit $rc
}
trap cleanup EXIT

step "package metadata: $DEB"
dpkg-deb --info "$DEB" | sed -n '/Package:/,$p'
depends=$(dpkg-deb --field "$DEB" Depends)
for lib in libavcodec libavutil libswscale libx264 libc6; do
	grep -q "$lib" <<<"$depends" || fail "Depends lacks $lib: $depends"
done
grep -qi nvidia <<<"$depends" && fail "Depends names the NVIDIA driver: $depends"
grep -q libcuda1 <<<"$(dpkg-deb --field "$DEB" Suggests)" || fail "Suggests lacks libcuda1"
conffiles=$(dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles)
[ "$conffiles" = "$CONFIG" ] || fail "conffiles is not just $CONFIG: $conffiles"
ok "Depends: $depends"

step "dpkg -i"
dpkg -i "$DEB" </dev/null | tee "$WORK/install.log"
grep -q "generated the publish key" "$WORK/install.log" || fail "postinst did not report the key"
key=$(sed -n 's/^key *= *"\(.*\)".*/\1/p' $CONFIG)
[[ "$key" =~ ^[0-9a-f]{32}$ ]] || fail "the channel key in $CONFIG is not 32 hex digits"
grep -q "$key" "$WORK/install.log" && fail "the installer's output shows the key"

step "installed files"
for f in "${FILES[@]}" $DEB_ZSH; do
	[ -f "$f" ] || fail "missing $f"
	dpkg -S "$f" >/dev/null || fail "$f is not owned by the package"
done
ok "${#FILES[@]} files + zsh completion"
[ -x /usr/bin/ladder ] || fail "/usr/bin/ladder is not executable"
/usr/bin/ladder --version
[ "$(stat -c '%U:%G %a' $CONFIG)" = "root:ladder 640" ] || fail "$CONFIG is $(stat -c '%U:%G %a' $CONFIG), not root:ladder 640"
[ "$(stat -c '%U:%G %a' /etc/ladder)" = "root:ladder 750" ] || fail "/etc/ladder is $(stat -c '%U:%G %a' /etc/ladder)"
ok "config root:ladder 0640 in /etc/ladder root:ladder 0750"
WANTS=/etc/systemd/system/multi-user.target.wants/ladder.service
[ "$(readlink -f $WANTS)" = "$(readlink -f $UNIT)" ] || fail "the unit is not enabled ($WANTS)"
ok "ladder.service enabled (started at boot; no systemd runs here to start it now)"
zcat /usr/share/man/man1/ladder.1.gz | grep -q '^\.TH ladder 1' || fail "man page has no .TH ladder 1"
zcat /usr/share/man/man1/ladder.1.gz | grep -q 'check\\-config' || fail "man page does not list check-config"
zcat /usr/share/man/man1/ladder.1.gz | grep -q '^\.SH FILES' || fail "man page has no FILES section"
zcat /usr/share/man/man1/ladder.1.gz | grep -q 'ladder generate' && fail "man page lists the hidden generate command"
bash -c 'source /usr/share/bash-completion/completions/ladder && complete -p ladder' | grep -q -- '-F' ||
	fail "bash completion does not register for ladder"
head -1 $DEB_ZSH | grep -q '^#compdef ladder' || fail "zsh completion has no #compdef ladder"
grep -q 'complete -c ladder' /usr/share/fish/vendor_completions.d/ladder.fish || fail "fish completion is empty"
ok "man page and bash, zsh, fish completions"

step "user"
getent passwd ladder || fail "no ladder user"
uid=$(id -u ladder)
[ "$uid" -lt 1000 ] || fail "ladder is not a system user (uid $uid)"
[ "$(getent passwd ladder | cut -d: -f7)" = /usr/sbin/nologin ] || fail "ladder has a login shell"
id -nG ladder | grep -qw video || fail "ladder is not in the video group: $(id -nG ladder)"
ok "ladder uid $uid, groups: $(id -nG ladder)"

step "publish key"
grep -q LADDER_PUBLISH_KEY_SET_AT_INSTALL $CONFIG && fail "the placeholder is still in $CONFIG"
grep -q '^open = false' $CONFIG || fail "$CONFIG is not closed"
setpriv --reuid=ladder --regid=ladder --init-groups /usr/bin/ladder check-config --config $CONFIG ||
	fail "check-config, as the ladder user, rejects $CONFIG"
ok "32 hex digits; check-config passes as user ladder"

step "systemd-analyze verify $UNIT"
verify_rc=0
systemd-analyze verify "$UNIT" >"$WORK/verify.log" 2>&1 || verify_rc=$?
cat "$WORK/verify.log"
[ $verify_rc = 0 ] || fail "systemd-analyze verify exited $verify_rc"
grep -qi ladder "$WORK/verify.log" && fail "systemd-analyze verify complains about the unit"
ok "verify is clean"

step "run the installed binary as the unit does"
unit_value() { sed -n "s/^$1=//p" $UNIT | head -1; }
exec_start=$(unit_value ExecStart)
run_user=$(unit_value User)
umask_value=$(unit_value UMask)
caps=$(unit_value CapabilityBoundingSet)
[ "$exec_start" = "/usr/bin/ladder serve --config $CONFIG" ] || fail "unexpected ExecStart=$exec_start"
grep -q '^Type=notify$' $UNIT || fail "the unit is not Type=notify"
# the installed config with its listeners on loopback ports the kernel picks
cp $CONFIG "$WORK/ladder.toml"
sed -i -E 's/^(rtmp_listen|http_listen|admin_listen)( *)= *"[^"]*"/\1\2= "127.0.0.1:0"/' "$WORK/ladder.toml"
beyond_ports=$(diff $CONFIG "$WORK/ladder.toml" | grep '^[<>]' | grep -v '_listen' || true)
[ -z "$beyond_ports" ] || fail "the copy differs beyond the ports: $beyond_ports"
chown root:ladder "$WORK/ladder.toml"
chmod 0640 "$WORK/ladder.toml"
command=${exec_start/$CONFIG/$WORK/ladder.toml}
# the notification socket systemd would pass: every datagram into notify.log
python3 - "$WORK/notify" "$WORK/notify.log" <<'PY' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o777)
with open(sys.argv[2], "ab", buffering=0) as log:
    while True:
        log.write(s.recv(4096) + b"--\n")
PY
NOTIFY_PID=$!
wait_for "the notification socket" test -S "$WORK/notify"
# exec keeps one pid from sh to ladder, so WATCHDOG_PID=$$ names ladder
# shellcheck disable=SC2016
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin NO_COLOR=1 RUST_LOG=info \
	NOTIFY_SOCKET="$WORK/notify" WATCHDOG_USEC=2000000 \
	sh -c 'umask "$1"; export WATCHDOG_PID=$$; shift; exec "$@"' sh "$umask_value" \
	setpriv --reuid="$run_user" --regid="$run_user" --init-groups --no-new-privs \
	--bounding-set="-all,+${caps#CAP_}" \
	$command >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
wait_for "ladder to start" grep -q 'ladder started' "$WORK/server.log"
started=$(grep 'ladder started' "$WORK/server.log")
rtmp=$(grep -o ' rtmp=[^ ]*' <<<"$started" | cut -d= -f2)
http=$(grep -o ' http=[^ ]*' <<<"$started" | cut -d= -f2)
grep -q 'mode="\?closed' <<<"$started" || fail "not started in closed mode: $started"
[ "$(ps -o user= -p $SERVER_PID)" = ladder ] || fail "the server runs as $(ps -o user= -p $SERVER_PID)"
grep CapBnd /proc/$SERVER_PID/status | grep -q 0000000000000400 ||
	fail "capability bounding set: $(grep CapBnd /proc/$SERVER_PID/status)"
grep -q 'NoNewPrivs:.*1' /proc/$SERVER_PID/status || fail "no_new_privs is not set"
ok "ladder runs as ladder, pid $SERVER_PID, RTMP $rtmp, HTTP $http"
wait_for "READY=1" grep -q '^READY=1$' "$WORK/notify.log"
grep -q "^STATUS=serving" "$WORK/notify.log" || fail "READY came without a STATUS line"
wait_for "WATCHDOG=1" grep -q '^WATCHDOG=1$' "$WORK/notify.log"
ok "READY=1 and WATCHDOG=1 on NOTIFY_SOCKET"

step "publish with the generated key, play"
src=(-f lavfi -i "testsrc2=size=640x360:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000")
enc=(-c:v libx264 -preset ultrafast -tune zerolatency -g 30 -keyint_min 30 -sc_threshold 0 -pix_fmt yuv420p
	-c:a aac -b:a 96k -f flv)
if timeout 60 ffmpeg -nostdin -loglevel error -re "${src[@]}" -t 2 "${enc[@]}" \
	"rtmp://$rtmp/live/not-the-key" >"$WORK/refused.log" 2>&1; then
	fail "a publish with a wrong key was accepted"
fi
grep -q 'unknown stream key\|Unauthorized' "$WORK/server.log" || fail "the server did not log the refused key"
ok "a wrong key is refused"
timeout 120 ffmpeg -nostdin -loglevel error -re "${src[@]}" -t 12 "${enc[@]}" \
	"rtmp://$rtmp/live/$key" >"$WORK/publish.log" 2>&1 &
FFMPEG_PID=$!
master="http://$http/live/main/master.m3u8"
wait_for "the master playlist" curl -sf -o /dev/null "$master"
curl -sf "$master"
has_segment() { curl -sf "http://$http/live/main/source/index.m3u8" | grep -q '^#EXTINF'; }
wait_for "a whole segment of the source rendition" has_segment
probe() { timeout 60 ffprobe -v error -select_streams "$1" -show_entries "$2" -of csv=p=0 "$master"; }
probe v stream=codec_name,width,height | tee "$WORK/probe-video.txt"
probe a stream=codec_name,sample_rate | tee "$WORK/probe-audio.txt"
grep -qx 'h264,640,360' "$WORK/probe-video.txt" || fail "ffprobe finds no 640x360 H.264 video in $master"
grep -qx 'aac,48000' "$WORK/probe-audio.txt" || fail "ffprobe finds no 48 kHz AAC audio in $master"
ok "ffprobe plays the master playlist: H.264 640x360 and AAC"
wait $FFMPEG_PID || fail "ffmpeg publishing with the key failed: $(cat "$WORK/publish.log")"
FFMPEG_PID=
grep -q "$key" "$WORK/server.log" && fail "the log shows the stream key"

step "stop"
kill -TERM $SERVER_PID
server_rc=0
wait $SERVER_PID || server_rc=$?
SERVER_PID=
[ $server_rc = 0 ] || fail "ladder exited $server_rc after SIGTERM"
grep -q '^STOPPING=1$' "$WORK/notify.log" || fail "no STOPPING=1"
ok "SIGTERM: STOPPING=1, exit 0"
kill $NOTIFY_PID && wait $NOTIFY_PID 2>/dev/null || true
NOTIFY_PID=

step "reinstall keeps the key; an administrator's edit stays"
dpkg -i "$DEB" </dev/null >/dev/null
[ "$(sed -n 's/^key *= *"\(.*\)".*/\1/p' $CONFIG)" = "$key" ] || fail "reinstalling changed the key"
sed -i 's/^key *= *".*"/key    = "chosen-by-the-admin"/' $CONFIG
dpkg -i "$DEB" </dev/null >/dev/null
grep -q '"chosen-by-the-admin"' $CONFIG || fail "reinstalling rewrote an edited config"
[ "$(stat -c '%U:%G %a' $CONFIG)" = "root:ladder 640" ] || fail "reinstall left $CONFIG $(stat -c '%U:%G %a' $CONFIG)"
ok "key kept, edit kept, still root:ladder 0640"

step "dpkg --purge"
dpkg --purge ladder
present && fail "still installed"
for f in "${FILES[@]}" $DEB_ZSH $WANTS /etc/ladder /usr/lib/ladder /usr/share/doc/ladder; do
	[ -e "$f" ] || [ -L "$f" ] && fail "$f is left after purge"
done
ok "every file is gone; the ladder user stays (Debian keeps system users): $(getent passwd ladder)"

step "rpm: $RPM"
rpm -qip "$RPM"
rpm -qlp "$RPM" | sort >"$WORK/rpm-files.txt"
cat "$WORK/rpm-files.txt"
for f in "${FILES[@]}" $RPM_ZSH; do
	grep -qx "$f" "$WORK/rpm-files.txt" || fail "the rpm lacks $f"
done
rpm -qcp "$RPM" | grep -qx $CONFIG || fail "$CONFIG is not a %config file in the rpm"
rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM" | grep -q "^cn $CONFIG\$" ||
	fail "$CONFIG is not %config(noreplace)"
rpm -qp --qf '[%{FILEMODES:perms} %{FILENAMES}\n]' "$RPM" | grep -q -- "^-rw-r----- $CONFIG\$" ||
	fail "$CONFIG is not 0640 in the rpm"
rpm -qp --scripts "$RPM" | grep -q /usr/lib/ladder/setup-config || fail "the rpm's %post does not run setup-config"
rpm -qp --requires "$RPM" | tee "$WORK/rpm-requires.txt"
grep -q 'libavcodec' "$WORK/rpm-requires.txt" || fail "the rpm does not require libavcodec"
grep -qi 'nvidia\|libcuda' "$WORK/rpm-requires.txt" && fail "the rpm requires the NVIDIA driver"
ok "rpm lists every file; config %config(noreplace) 0640; %post runs setup-config"

printf '\npackage test passed\n'
