#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# machine: imx8mp-evk
# kernels: debian-rt
# dw100: fixed
# data: dewarp
# timeout: 600
# expect: pass
# todo: all on PREEMPT_RT the primary handler is forced into a thread too: the bus stays enabled until that thread runs
#
# dw100-bus-timeout-oneshot.sh's period and real-time load with the fixed
# driver (the hard half silences the hardware, a thread finishes the job,
# as Linux 7.1 does). It should report no INT_ERR_TIME_OUT, but on a
# PREEMPT_RT kernel genirq forces the hard half into a thread of its own
# (irq/N-32e30000.dwe beside irq/N-s-32e30000.dwe), which the real-time
# task delays like oneshot-dropped's: jobs report INT_ERR_TIME_OUT, about
# as many. A known failure of that fix; dw100-bus-timeout-hardirq.sh is the
# same test with the hard half kept in hard interrupt context.
timeouts_expected=none
rt_load=on
. "$REPO/tests/clients/dw100-streams.sh"
