#!/bin/busybox sh
# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=dash # busybox ash, as strict as dash for what this uses
# PID 1 of a harness guest. Mounts its root read-only over 9p (the host's
# own, or a prepared root with the shared host paths mounted into a tmpfs),
# runs one command in it (images/guest-run.sh), then reports through the
# harness directory: the command's status, tasks left in D state, the
# kernel log. Powers off in every case; the host judges the run.

/bin/busybox --install -s /bin
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

P9="trans=virtio,version=9p2000.L,msize=262144"

fail() {
	echo "vdv-init: $*"
	echo "$*" > /harness/init-error 2>/dev/null
	sync
	poweroff -f
}

while read -r module; do
	[ -n "$module" ] || continue
	insmod "/modules/$module" || fail "cannot load $module"
done < /modules/order

# The 9p devices may still be probing (behind a PCIe link that comes up
# once its PHY module is in, slower on a loaded host): up to 30 s of retries.
tries=0
until mount -t 9p -o "$P9,cache=none" harness /harness 2>/dev/null; do
	tries=$((tries + 1))
	[ "$tries" -lt 300 ] || fail "cannot mount the harness directory"
	sleep 0.1
done
# shellcheck source=/dev/null # written by the host for each boot
. /harness/config
echo "vdv-init: userspace reached"

if [ "$ROOT" = image ]; then
	# A prepared root has only its own top-level directories (bound
	# read-only) and links; a tmpfs above them takes the mount points of
	# the host paths shared below.
	mount -t 9p -o "$P9,ro,cache=loose" hostroot /sysroot ||
		fail "cannot mount the guest root"
	mount -t tmpfs -o mode=755 tmpfs /newroot || fail "cannot mount the root tmpfs"
	for entry in /sysroot/*; do
		name=${entry#/sysroot/}
		if [ -L "$entry" ]; then
			ln -s "$(readlink "$entry")" "/newroot/$name"
		elif [ -d "$entry" ]; then
			mkdir "/newroot/$name"
			mount --bind "$entry" "/newroot/$name" || fail "cannot bind /$name"
		fi
	done
	mkdir -p /newroot/dev /newroot/proc /newroot/sys /newroot/tmp /newroot/run
else
	mount -t 9p -o "$P9,ro,cache=loose" hostroot /newroot ||
		fail "cannot mount the host root"
fi
for dir in /tmp /run /var/tmp; do
	mount -t tmpfs -o mode=1777 tmpfs "/newroot$dir" ||
		fail "cannot mount tmpfs on $dir"
done
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t debugfs debugfs /newroot/sys/kernel/debug 2>/dev/null
mkdir -p /newroot/run/harness
mount --bind /harness /newroot/run/harness || fail "cannot bind the harness directory"
# The guest kernel's modules live in the harness's cache, not in the host's
# /lib/modules.
mount -t 9p -o "$P9,ro,cache=loose" modules /newroot/lib/modules ||
	fail "cannot mount the kernel's modules"
# Read-only shares: on a prepared root every host path it needs; over the
# host's root the ones the tmpfs mounts above hide (a checkout in /var/tmp).
i=0
while [ "$i" -lt "${RO_SHARE_COUNT:-0}" ]; do
	eval "dir=\$RO_SHARE_$i"
	mkdir -p "/newroot$dir" 2>/dev/null
	mount -t 9p -o "$P9,ro,cache=loose" "roshare$i" "/newroot$dir" ||
		fail "cannot mount the shared directory $dir"
	i=$((i + 1))
done
i=0
while [ "$i" -lt "$SHARE_COUNT" ]; do
	eval "dir=\$SHARE_$i"
	# Under a tmpfs (/tmp, ...) the mount point does not exist yet.
	mkdir -p "/newroot$dir" 2>/dev/null
	mount -t 9p -o "$P9,cache=none" "share$i" "/newroot$dir" ||
		fail "cannot mount the shared directory $dir"
	i=$((i + 1))
done

# The command runs in its own session so that a timeout kills all of it.
setsid chroot /newroot /bin/sh /run/harness/guest-run.sh &
pid=$!
elapsed=0
while grep -q '^State:.[^Z]' "/proc/$pid/status" 2>/dev/null; do
	if [ "$elapsed" -ge "$TIMEOUT" ]; then
		echo "$TIMEOUT" > /harness/timed-out
		kill -KILL -- "-$pid" 2>/dev/null
		break
	fi
	sleep 1
	elapsed=$((elapsed + 1))
done
# Reap it unless it is stuck beyond SIGKILL (then it shows up below).
waited=0
while grep -q '^State:.[^Z]' "/proc/$pid/status" 2>/dev/null && [ "$waited" -lt 10 ]; do
	sleep 1
	waited=$((waited + 1))
done
grep -q '^State:.Z' "/proc/$pid/status" 2>/dev/null && wait "$pid"

# Tasks in uninterruptible sleep: only those that stay there count.
d_tasks() {
	for status in /proc/[0-9]*/status; do
		grep -q '^State:.D' "$status" 2>/dev/null || continue
		task=${status#/proc/}
		echo "${task%/status}"
	done
}
stuck=$(d_tasks)
for _ in 1 2 3; do
	[ -n "$stuck" ] || break
	sleep 1
	again=""
	for task in $(d_tasks); do
		case " $stuck " in *" $task "*) again="$again $task" ;; esac
	done
	stuck=$again
done
if [ -n "$stuck" ]; then
	for task in $stuck; do
		name=$(grep '^Name:' "/proc/$task/status" 2>/dev/null)
		echo "pid $task ${name#Name:	}" >> /harness/d-state
		cat "/proc/$task/stack" >> /harness/d-state 2>/dev/null
	done
	echo w > /proc/sysrq-trigger 2>/dev/null
fi

dmesg > /harness/dmesg
echo "done" > /harness/finished
sync
poweroff -f
