#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt
# needs-config: CONFIG_PREEMPT_RT CONFIG_DEBUG_ATOMIC_SLEEP
# devices: none
# qemu: stock
# module: rt_negative lock=sleeping
# timeout: 120
# expect: splat
#
# Negative control: the module takes a spinlock_t from a hard irq hrtimer.
# The debug RT kernel must report it and the harness must judge the run
# failed; this test passes only when that splat was detected.
grep -q '^rt_negative ' /proc/modules
