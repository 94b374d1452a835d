// SPDX-License-Identifier: GPL-2.0
/*
 * Negative control for the guest test harness.
 *
 * An hrtimer in HRTIMER_MODE_REL_HARD runs its callback in hard interrupt
 * context even on PREEMPT_RT. The callback takes either a spinlock_t, which
 * is a sleeping lock on PREEMPT_RT and must be reported by a kernel with
 * DEBUG_ATOMIC_SLEEP or PROVE_RAW_LOCK_NESTING, or a raw_spinlock_t, which
 * is correct there.
 */

#include <linux/completion.h>
#include <linux/hrtimer.h>
#include <linux/jiffies.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/spinlock.h>
#include <linux/string.h>

static char *lock = "sleeping";
module_param(lock, charp, 0444);
MODULE_PARM_DESC(lock,
		 "lock taken from hard irq context: sleeping (spinlock_t, wrong on PREEMPT_RT) or raw (raw_spinlock_t)");

static DEFINE_SPINLOCK(rt_negative_sleeping_lock);
static DEFINE_RAW_SPINLOCK(rt_negative_raw_lock);
static DECLARE_COMPLETION(rt_negative_fired);
static struct hrtimer rt_negative_timer;
static bool rt_negative_use_raw;
static unsigned int rt_negative_count;

static enum hrtimer_restart rt_negative_timer_fn(struct hrtimer *timer)
{
	unsigned long flags;

	if (rt_negative_use_raw) {
		raw_spin_lock_irqsave(&rt_negative_raw_lock, flags);
		rt_negative_count++;
		raw_spin_unlock_irqrestore(&rt_negative_raw_lock, flags);
	} else {
		spin_lock_irqsave(&rt_negative_sleeping_lock, flags);
		rt_negative_count++;
		spin_unlock_irqrestore(&rt_negative_sleeping_lock, flags);
	}
	/* Completions use a raw lock: fine from hard irq context. */
	complete(&rt_negative_fired);
	return HRTIMER_NORESTART;
}

static int __init rt_negative_init(void)
{
	if (!strcmp(lock, "raw")) {
		rt_negative_use_raw = true;
	} else if (strcmp(lock, "sleeping")) {
		pr_err("rt_negative: lock=%s: expected sleeping or raw\n", lock);
		return -EINVAL;
	}

	hrtimer_init(&rt_negative_timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_HARD);
	rt_negative_timer.function = rt_negative_timer_fn;
	hrtimer_start(&rt_negative_timer, ms_to_ktime(10), HRTIMER_MODE_REL_HARD);

	if (!wait_for_completion_timeout(&rt_negative_fired,
					 msecs_to_jiffies(5000))) {
		hrtimer_cancel(&rt_negative_timer);
		pr_err("rt_negative: the timer never fired\n");
		return -ETIMEDOUT;
	}
	pr_info("rt_negative: hard irq timer took a %s lock\n",
		rt_negative_use_raw ? "raw" : "sleeping");
	return 0;
}

static void __exit rt_negative_exit(void)
{
	hrtimer_cancel(&rt_negative_timer);
}

module_init(rt_negative_init);
module_exit(rt_negative_exit);

MODULE_DESCRIPTION("Harness negative control: a lock taken from hard irq context");
MODULE_LICENSE("GPL");
