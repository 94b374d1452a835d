#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# machine: imx8mp-evk
# kernels: debug-rt debian-rt
# dw100: fixed-hardirq
# data: dewarp
# timeout: 600
# expect: pass
#
# dw100-bus-timeout-oneshot.sh's period and real-time load with the fixed
# driver whose hard half is requested with IRQF_NO_THREAD
# (tests/dw100/hardirq.patch): it runs in hard interrupt context on
# PREEMPT_RT too, which no task delays, and disables the AXI master at
# once: no job reports INT_ERR_TIME_OUT, and the debug kernel reports
# nothing about a hard half that takes no sleeping lock.
timeouts_expected=none
rt_load=on
. "$REPO/tests/clients/dw100-streams.sh"
