#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# machine: imx8mp-evk
# kernels: debug-rt
# dw100: fixed-watchdog
# data: dewarp
# timeout: 600
# expect: pass
#
# dw100-rt-clean.sh with the job watchdog added (tests/dw100/watchdog.patch):
# its raw spinlock and the watchdog's cancel in the hard interrupt half, its
# arming in every job's start, must keep the debug kernel silent too; ten
# streams, each bit-exact, no watchdog message.
. "$REPO/tests/e2e/dw100-rt-clean.sh"
