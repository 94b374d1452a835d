#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt
# devices: none
# qemu: stock
# module: rt_negative lock=raw
# timeout: 120
# expect: pass
#
# The same module with a raw_spinlock_t: correct on PREEMPT_RT, so the run
# must be clean.
grep -q '^rt_negative ' /proc/modules
dmesg | grep -q 'rt_negative: hard irq timer took a raw lock'
