# ladder: %preun. On erase (not upgrade), stop and disable the service (what
# %systemd_preun does).
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
	systemctl --no-reload disable --now ladder.service >/dev/null 2>&1 || :
fi
