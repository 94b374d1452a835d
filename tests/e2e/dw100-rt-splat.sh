#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# machine: imx8mp-evk
# kernels: debug-rt
# needs-config: CONFIG_PREEMPT_RT CONFIG_DEBUG_ATOMIC_SLEEP
# dw100: unfixed
# data: dewarp
# timeout: 300
# repeat: 10
# expect: splat
# splat-names: dw100_irq_handler
# splat-names: Invalid wait context | sleeping function called from invalid context
# splat-names: v4l2_m2m_ | vb2_
#
# The dw100 driver as linux-source-6.12 ships it, on the arm64 debug RT
# kernel: a short v4l2-ctl stream must make the kernel report the sleeping
# lock (the mem2mem framework's job spinlock, then vb2's) taken by
# dw100_irq_handler in hard interrupt context. Ten separate boots, because
# lockdep turns itself off after its first report: each boot must catch it.
# A boot without that report fails the test: the bug was not caught.
. "$REPO/tests/clients/dewarp-lib.sh"
dw_v4l2_stream "unfixed stream" || true
dw_done
