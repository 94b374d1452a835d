#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# machine: imx8mp-evk
# kernels: debug-rt
# dw100: fixed
# dw100-model: fault-no-irq=on
# data: dewarp
# timeout: 180
# expect: pass
# todo: all the fixed driver has no job timeout: v4l2-ctl is left in D state in v4l2_m2m_cancel_job (via dw100_release)
#
# A DW100 that never interrupts (tests/clients/dw100-no-irq.sh), with the
# fixed driver: it waits for the interrupt for ever, so the first
# v4l2-ctl stream leaves its process in D state, surviving SIGKILL; the
# output shows its kernel stack. Kept as a known failure of the upstream
# driver; dw100-no-irq-watchdog.sh is the same test with the watchdog.
. "$REPO/tests/clients/dw100-no-irq.sh"
