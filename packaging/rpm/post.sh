# ladder: %post. The user, the publish key and the config's owner
# (setup-config); on first install, the unit enabled or not as the system's
# presets say (what %systemd_post does).
/usr/lib/ladder/setup-config
if [ "$1" -eq 1 ] && [ -x /usr/bin/systemctl ]; then
	systemctl --no-reload preset ladder.service >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
	systemd-tmpfiles --create ladder.conf >/dev/null 2>&1 || :
fi
