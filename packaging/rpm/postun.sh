# ladder: %postun. On upgrade, restart a running service on the new binary
# (what %systemd_postun_with_restart does); on erase, remove /etc/ladder if
# nothing is left in it. The ladder system user is kept.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -ge 1 ]; then
		systemctl try-restart ladder.service >/dev/null 2>&1 || :
	fi
fi
if [ "$1" -eq 0 ]; then
	rmdir /etc/ladder 2>/dev/null || :
fi
