#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# machine: imx8mp-evk
# kernels: debug-rt debian-rt
# dw100: fixed-watchdog
# dw100-model: fault-no-irq=on
# data: dewarp
# timeout: 180
# expect: pass
#
# A DW100 that never interrupts (tests/clients/dw100-no-irq.sh), with the RT
# fix and the job watchdog (tests/dw100/watchdog.patch): each job fails 2 s
# after it started, with its buffers in the error state; v4l2-ctl exits
# cleanly, fault-client gets an ERROR buffer and every buffer back, nothing
# is left in D state, and the debug kernel reports nothing.
. "$REPO/tests/clients/dw100-no-irq.sh"
