#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# machine: imx8mp-evk
# kernels: debug-rt debian-rt
# dw100: fixed
# data: dewarp
# timeout: 600
# expect: pass
#
# The stream of dw100-rt-splat.sh through the fixed driver (the job finishes
# in a threaded handler), ten times in one boot, each bit-exact
# (tests/clients/dw100-streams.sh). On the debug kernel lockdep and
# DEBUG_ATOMIC_SLEEP check every lock the handlers take, on every
# interrupt, so one boot sees what ten would; any report fails the run. The
# hard half disables the AXI master within milliseconds (at most 8.7 ms
# measured under TCG, docs/imx8mp.md), far inside the model's default bus
# timeout period of 100 ms: no "Interrupt error" either.
timeouts_expected=none
rt_load=off
. "$REPO/tests/clients/dw100-streams.sh"
