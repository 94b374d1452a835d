#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Runs inside the guest, in the host's root: loads the module under test
# (its dependencies through modprobe), then runs the command with its output
# and exit status in the harness directory.

H=/run/harness
# shellcheck source=/dev/null # written by the host for each boot
. "$H/env"
export HOME=/tmp
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Tools built for the guest kernels come before the host's older ones.
if [ -n "${VDV_TOOLS_PATH:-}" ]; then
	PATH="$VDV_TOOLS_PATH:$PATH"
fi
export TERM=dumb

if [ -n "${VDV_MODULE:-}" ]; then
	for dep in $(modinfo -F depends "$VDV_MODULE" | tr ',' ' '); do
		if ! modprobe "$dep" > "$H/module-error" 2>&1; then
			echo "modprobe $dep (needed by $VDV_MODULE) failed: $(cat "$H/module-error")" > "$H/module-error"
			exit 1
		fi
	done
	# shellcheck disable=SC2086 # parameters are separate words
	if ! insmod "$VDV_MODULE" $VDV_MODULE_PARAMS > "$H/module-error" 2>&1; then
		echo "insmod $VDV_MODULE failed: $(cat "$H/module-error")" > "$H/module-error"
		exit 1
	fi
	rm -f "$H/module-error"
fi

cd "${VDV_WORKDIR:-/}" 2>/dev/null || cd /
/bin/sh "$H/command" > "$H/output" 2>&1 < /dev/null
echo $? > "$H/status"
