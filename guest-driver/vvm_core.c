// SPDX-License-Identifier: GPL-2.0
/*
 * Shared core of the virtio video mem2mem nodes.
 *
 * The virtqueue callback may run in hard interrupt context (it is
 * force-threaded by virtio-pci on PREEMPT_RT, but not by every transport), so
 * it takes only the raw spinlock and defers everything else to the core's
 * kthread worker. The worker runs at SCHED_FIFO 50, the priority of the irq
 * thread the callback runs in on PREEMPT_RT, so that deferring does not
 * lower the completions' priority: a real-time task below the interrupt
 * threads delays neither them nor the watchdog, whose timer fires in hard
 * interrupt context.
 *
 * The raw spinlock also serialises adding to and taking from a virtqueue.
 * That is only possible because the driver refuses indirect
 * descriptors (see vvm_main.c): with them the ring allocates a table when a
 * chain is added and frees it when the chain is taken back, and on
 * PREEMPT_RT neither may happen under a raw spinlock or in hard interrupt
 * context.
 */
#include <linux/hrtimer.h>
#include <linux/jiffies.h>
#include <linux/kthread.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/virtio_config.h>

#include "vvm_core.h"

static unsigned int timeout_ms = 2000;
module_param(timeout_ms, uint, 0644);
MODULE_PARM_DESC(timeout_ms,
		 "Watchdog per request in ms; an unanswered request marks the device dead");

/*
 * Off by default: QEMU 10.2's vhost-user front end aborts when the guest
 * restarts a device whose backend is gone, so the user decides when.
 */
static bool revive_on_open;
module_param(revive_on_open, bool, 0644);
MODULE_PARM_DESC(revive_on_open,
		 "Re-initialise a dead device on the next open (the backend must be back)");

unsigned long vvm_core_timeout_jiffies(void)
{
	return max(msecs_to_jiffies(READ_ONCE(timeout_ms)), 1UL);
}

struct device *vvm_core_dma_device(struct vvm_core *core)
{
	return core->vdev->dev.parent;
}

void vvm_core_premap(struct scatterlist *sg, unsigned int n)
{
	unsigned int i;

	for (i = 0; i < n; i++, sg = sg_next(sg)) {
		sg_dma_address(sg) = sg_phys(sg);
		sg_dma_len(sg) = sg->length;
	}
}

static int vvm_state_errno(enum vvm_core_state state)
{
	switch (state) {
	case VVM_CORE_LIVE:
	case VVM_CORE_REVIVING:
		return 0;
	case VVM_CORE_DEAD:
		return -EIO;
	default:
		return -ENODEV;
	}
}

/*
 * Caller holds core->lock. Returns true if the ring is broken: the device
 * returned an id the ring never gave it, so virtqueue_get_buf() stops
 * returning buffers and no interrupt will come for this virtqueue again.
 */
static bool vvm_harvest_locked(struct vvm_core *core, unsigned int idx)
{
	struct virtqueue *vq = core->vqs[idx];
	struct vvm_request *req;
	unsigned int len;

	do {
		virtqueue_disable_cb(vq);
		while ((req = virtqueue_get_buf(vq, &len))) {
			req->used_len = len;
			list_move_tail(&req->list, &core->done);
			core->last_answer = jiffies;
		}
	} while (!virtqueue_enable_cb(vq));
	return virtqueue_is_broken(vq);
}

/* Hard half: harvest and hand over, nothing else. */
static void vvm_vq_callback(struct virtqueue *vq)
{
	struct vvm_core *core = vq->vdev->priv;
	unsigned int idx = vq->index;
	unsigned long flags;

	if (idx >= core->nvqs)
		return;

	raw_spin_lock_irqsave(&core->lock, flags);
	if (core->vqs[idx] && vvm_harvest_locked(core, idx))
		kthread_queue_work(core->worker, &core->kill_work);
	kthread_queue_work(core->worker, &core->complete_work);
	raw_spin_unlock_irqrestore(&core->lock, flags);
}

static int vvm_find_vqs(struct vvm_core *core)
{
	struct virtqueue_info info[VVM_MAX_VQS] = {};
	unsigned int i;
	int ret;

	for (i = 0; i < core->nvqs; i++) {
		info[i].name = core->vq_names[i];
		info[i].callback = vvm_vq_callback;
	}
	ret = virtio_find_vqs(core->vdev, core->nvqs, core->vqs, info, NULL);
	if (ret || !core->premapped)
		return ret;
	/*
	 * Premapped: the ring takes sg_dma_address() as it is. Only right
	 * while it would otherwise use sg_phys(), without the DMA API.
	 */
	for (i = 0; i < core->nvqs && !ret; i++) {
		if (virtqueue_dma_dev(core->vqs[i]))
			ret = -EINVAL;
		else
			ret = virtqueue_set_dma_premapped(core->vqs[i]);
	}
	if (ret) {
		dev_err(&core->vdev->dev,
			"cannot hand premapped buffers to this ring (%d)\n", ret);
		core->vdev->config->del_vqs(core->vdev);
		memset(core->vqs, 0, sizeof(core->vqs));
	}
	return ret;
}

/* Threaded half: run the completions the hard half harvested. */
static void vvm_run_done(struct vvm_core *core)
{
	struct vvm_request *req, *tmp;
	unsigned long flags;
	bool revived = false;
	LIST_HEAD(done);

	raw_spin_lock_irqsave(&core->lock, flags);
	list_splice_init(&core->done, &done);
	if (!list_empty(&done) && core->state == VVM_CORE_REVIVING) {
		core->state = VVM_CORE_LIVE;
		revived = true;
	}
	raw_spin_unlock_irqrestore(&core->lock, flags);

	if (revived)
		dev_info(&core->vdev->dev, "backend answers again\n");

	list_for_each_entry_safe(req, tmp, &done, list) {
		list_del_init(&req->list);
		req->complete(req, 0);
	}
}

static void vvm_complete_work(struct kthread_work *work)
{
	vvm_run_done(container_of(work, struct vvm_core, complete_work));
}

/*
 * Reset the device so it can no longer touch guest memory, take every
 * buffer back and fail it. Runs in the threaded half.
 */
static void vvm_kill(struct vvm_core *core, enum vvm_core_state new_state,
		     struct vvm_request *culprit)
{
	int err = new_state == VVM_CORE_REMOVED ? -ENODEV : -EIO;
	struct vvm_request *req, *tmp;
	unsigned long flags;
	LIST_HEAD(failed);
	unsigned int i;

	mutex_lock(&core->submit_lock);
	raw_spin_lock_irqsave(&core->lock, flags);
	if (core->state == new_state || core->state == VVM_CORE_REMOVED) {
		raw_spin_unlock_irqrestore(&core->lock, flags);
		mutex_unlock(&core->submit_lock);
		return;
	}
	core->state = new_state;
	raw_spin_unlock_irqrestore(&core->lock, flags);

	if (core->vqs[0]) {
		virtio_reset_device(core->vdev);
		raw_spin_lock_irqsave(&core->lock, flags);
		for (i = 0; i < core->nvqs; i++) {
			vvm_harvest_locked(core, i);
			while ((req = virtqueue_detach_unused_buf(core->vqs[i])))
				list_move_tail(&req->list, &failed);
		}
		list_splice_tail_init(&core->inflight, &failed);
		raw_spin_unlock_irqrestore(&core->lock, flags);
		core->vdev->config->del_vqs(core->vdev);
		memset(core->vqs, 0, sizeof(core->vqs));
	}
	mutex_unlock(&core->submit_lock);

	/* Answers that arrived before the reset are real answers. */
	vvm_run_done(core);
	list_for_each_entry_safe(req, tmp, &failed, list) {
		list_del_init(&req->list);
		req->complete(req, req == culprit ? -ETIMEDOUT : err);
	}
	if (core->ops->dead)
		core->ops->dead(core, err);
}

/*
 * A timed request expires after a period of silence: counted from its
 * submission or from the device's latest answer, whichever is later. A
 * backend working through a queue of jobs keeps answering, so the jobs
 * behind do not expire; a dead one answers nothing. Caller holds core->lock.
 */
static unsigned long vvm_deadline(struct vvm_core *core,
				  const struct vvm_request *req,
				  unsigned long period)
{
	unsigned long start = req->submitted;

	if (time_after(core->last_answer, start))
		start = core->last_answer;
	return start + (req->wait == VVM_WAIT_PROBE ?
			max(period / 2, 1UL) : period);
}

/* Killing from a context that cannot: a broken ring, vvm_core_kill(). */
static void vvm_kill_work(struct kthread_work *work)
{
	struct vvm_core *core = container_of(work, struct vvm_core, kill_work);
	bool broken = false;
	unsigned int i;

	mutex_lock(&core->submit_lock);
	for (i = 0; i < core->nvqs; i++)
		if (core->vqs[i] && virtqueue_is_broken(core->vqs[i]))
			broken = true;
	mutex_unlock(&core->submit_lock);
	if (broken && READ_ONCE(core->state) != VVM_CORE_REMOVED)
		dev_err(&core->vdev->dev,
			"virtqueue broken (the device returned a buffer it was never given), device marked dead\n");
	vvm_kill(core, VVM_CORE_DEAD, NULL);
}

/*
 * Fire the watchdog @delay jiffies from now, unless it is due sooner.
 * Caller holds core->lock, which orders the callers' look at the timer.
 */
static void vvm_watchdog_arm_locked(struct vvm_core *core, unsigned long delay)
{
	ktime_t expires = ktime_add_ns(ktime_get(), jiffies_to_nsecs(delay));

	if (hrtimer_is_queued(&core->watchdog_timer) &&
	    ktime_before(hrtimer_get_expires(&core->watchdog_timer), expires))
		return;
	hrtimer_start(&core->watchdog_timer, expires, HRTIMER_MODE_ABS_HARD);
}

/*
 * Hard interrupt context, on PREEMPT_RT too (a softirq timer would run in
 * ksoftirqd, SCHED_OTHER, which any real-time task starves): only hand over.
 */
static enum hrtimer_restart vvm_watchdog_fire(struct hrtimer *timer)
{
	struct vvm_core *core = container_of(timer, struct vvm_core,
					     watchdog_timer);

	kthread_queue_work(core->worker, &core->watchdog_work);
	return HRTIMER_NORESTART;
}

/*
 * What the watchdog found in flight: the first request past its deadline,
 * else the earliest deadline to come and whether any request may wait
 * forever.
 */
struct vvm_watchdog_scan {
	struct vvm_request *expired;
	unsigned long next;
	bool timed;
	bool waiting;
};

static void vvm_watchdog_scan(struct vvm_core *core, unsigned long now,
			      unsigned long period,
			      struct vvm_watchdog_scan *scan)
{
	struct vvm_request *req;
	unsigned long deadline;
	unsigned long flags;

	*scan = (struct vvm_watchdog_scan){};
	raw_spin_lock_irqsave(&core->lock, flags);
	list_for_each_entry(req, &core->inflight, list) {
		if (req->wait == VVM_WAIT_LONG)
			scan->waiting = true;
		if (req->wait != VVM_WAIT_TIMED && req->wait != VVM_WAIT_PROBE)
			continue;
		deadline = vvm_deadline(core, req, period);
		if (time_after_eq(now, deadline)) {
			scan->expired = req;
			break;
		}
		if (!scan->timed || time_before(deadline, scan->next))
			scan->next = deadline;
		scan->timed = true;
	}
	raw_spin_unlock_irqrestore(&core->lock, flags);
}

static void vvm_watchdog_work(struct kthread_work *work)
{
	struct vvm_core *core = container_of(work, struct vvm_core,
					     watchdog_work);
	unsigned long period = vvm_core_timeout_jiffies();
	struct vvm_watchdog_scan scan;
	unsigned long now;
	unsigned long flags;
	int ret;

	/* Answers already harvested count, whatever the work order. */
	vvm_run_done(core);

	now = jiffies;
	vvm_watchdog_scan(core, now, period, &scan);
	if (scan.expired) {
		dev_err(&core->vdev->dev,
			"no answer within %u ms, device marked dead\n",
			jiffies_to_msecs(scan.expired->wait == VVM_WAIT_PROBE ?
					 period / 2 : period));
		vvm_kill(core, VVM_CORE_DEAD, scan.expired);
		return;
	}
	/*
	 * Requests that may wait forever: is anybody still there? Look again
	 * every quarter period, whatever else is in flight, and ping anew once
	 * no timed request is left: a ping has half a period, so a death is
	 * noticed within one period.
	 */
	if (scan.waiting && !scan.timed && core->ops->ping) {
		ret = core->ops->ping(core);
		/* Without a ping in flight nothing would notice a death. */
		if (ret && ret != -ENOSPC) {
			dev_err(&core->vdev->dev,
				"cannot ping the backend (%d), device marked dead\n",
				ret);
			vvm_kill(core, VVM_CORE_DEAD, NULL);
			return;
		}
	}
	if (scan.waiting) {
		unsigned long quarter = now + max(period / 4, 1UL);

		if (!scan.timed || time_before(quarter, scan.next))
			scan.next = quarter;
		scan.timed = true;
	}
	if (scan.timed) {
		raw_spin_lock_irqsave(&core->lock, flags);
		vvm_watchdog_arm_locked(core, scan.next - now);
		raw_spin_unlock_irqrestore(&core->lock, flags);
	}
}

static int vvm_reinit_device(struct vvm_core *core)
{
	struct virtio_device *vdev = core->vdev;
	int ret;

	virtio_add_status(vdev, VIRTIO_CONFIG_S_ACKNOWLEDGE);
	virtio_add_status(vdev, VIRTIO_CONFIG_S_DRIVER);
	ret = vdev->config->finalize_features(vdev);
	if (ret)
		return ret;
	virtio_add_status(vdev, VIRTIO_CONFIG_S_FEATURES_OK);
	if (!(vdev->config->get_status(vdev) & VIRTIO_CONFIG_S_FEATURES_OK))
		return -ENODEV;
	return vvm_find_vqs(core);
}

static void vvm_revive_work(struct kthread_work *work)
{
	struct vvm_core *core = container_of(work, struct vvm_core,
					     revive_work);
	unsigned long flags;
	int ret;

	if (!core->ops->revive)
		return;

	mutex_lock(&core->submit_lock);
	if (READ_ONCE(core->state) != VVM_CORE_DEAD) {
		mutex_unlock(&core->submit_lock);
		return;
	}
	ret = vvm_reinit_device(core);
	if (ret) {
		virtio_reset_device(core->vdev);
		mutex_unlock(&core->submit_lock);
		dev_err(&core->vdev->dev, "re-initialisation failed: %d\n",
			ret);
		return;
	}
	raw_spin_lock_irqsave(&core->lock, flags);
	core->state = VVM_CORE_REVIVING;
	raw_spin_unlock_irqrestore(&core->lock, flags);
	virtio_device_ready(core->vdev);
	mutex_unlock(&core->submit_lock);

	dev_info(&core->vdev->dev, "device re-initialised, probing backend\n");
	ret = core->ops->revive(core);
	if (!ret && core->ops->ping)
		ret = core->ops->ping(core);
	if (ret)
		vvm_kill(core, VVM_CORE_DEAD, NULL);
}

static void vvm_remove_work(struct kthread_work *work)
{
	vvm_kill(container_of(work, struct vvm_core, remove_work),
		 VVM_CORE_REMOVED, NULL);
}

struct kthread_worker *vvm_fifo_worker_create(struct virtio_device *vdev,
					      const char *prefix)
{
	struct kthread_worker *worker;

	worker = kthread_create_worker(0, "%s-%s", prefix, dev_name(&vdev->dev));
	if (!IS_ERR(worker))
		sched_set_fifo(worker->task);
	return worker;
}

int vvm_core_init(struct vvm_core *core, struct virtio_device *vdev,
		  const struct vvm_core_ops *ops, unsigned int nvqs,
		  const char * const names[])
{
	unsigned int i;
	int ret;

	if (!nvqs || nvqs > VVM_MAX_VQS)
		return -EINVAL;

	core->vdev = vdev;
	core->ops = ops;
	core->nvqs = nvqs;
	for (i = 0; i < nvqs; i++)
		core->vq_names[i] = names[i];
	raw_spin_lock_init(&core->lock);
	core->state = VVM_CORE_LIVE;
	INIT_LIST_HEAD(&core->inflight);
	INIT_LIST_HEAD(&core->done);
	core->last_answer = jiffies;
	mutex_init(&core->submit_lock);
	kthread_init_work(&core->complete_work, vvm_complete_work);
	kthread_init_work(&core->watchdog_work, vvm_watchdog_work);
	kthread_init_work(&core->revive_work, vvm_revive_work);
	kthread_init_work(&core->kill_work, vvm_kill_work);
	kthread_init_work(&core->remove_work, vvm_remove_work);
	hrtimer_init(&core->watchdog_timer, CLOCK_MONOTONIC,
		     HRTIMER_MODE_ABS_HARD);
	core->watchdog_timer.function = vvm_watchdog_fire;

	core->worker = vvm_fifo_worker_create(vdev, "vvm");
	if (IS_ERR(core->worker)) {
		ret = PTR_ERR(core->worker);
		core->worker = NULL;
		return ret;
	}

	vdev->priv = core;
	ret = vvm_find_vqs(core);
	if (ret) {
		kthread_destroy_worker(core->worker);
		core->worker = NULL;
		vdev->priv = NULL;
	}
	return ret;
}

void vvm_core_ready(struct vvm_core *core)
{
	virtio_device_ready(core->vdev);
}

void vvm_core_remove(struct vvm_core *core)
{
	kthread_queue_work(core->worker, &core->remove_work);
	kthread_flush_work(&core->remove_work);
	/* Nothing is in flight any more: the watchdog does not re-arm. */
	hrtimer_cancel(&core->watchdog_timer);
	kthread_cancel_work_sync(&core->watchdog_work);
	kthread_cancel_work_sync(&core->revive_work);
	kthread_cancel_work_sync(&core->kill_work);
	kthread_flush_worker(core->worker);
}

void vvm_core_release(struct vvm_core *core)
{
	if (!core->worker)
		return;
	if (READ_ONCE(core->state) != VVM_CORE_REMOVED)
		vvm_core_remove(core);
	kthread_destroy_worker(core->worker);
	core->worker = NULL;
}

void vvm_request_init(struct vvm_request *req, vvm_complete_t complete,
		      void *priv)
{
	req->complete = complete;
	req->priv = priv;
	req->used_len = 0;
	req->wait = VVM_WAIT_TIMED;
	req->owner = NULL;
	INIT_LIST_HEAD(&req->list);
}

int vvm_core_submit(struct vvm_core *core, struct vvm_request *req,
		    unsigned int vq, struct scatterlist *sgs[],
		    unsigned int out_sgs, unsigned int in_sgs)
{
	unsigned long timeout = vvm_core_timeout_jiffies();
	bool notify = false, broken = false;
	unsigned long flags;
	int ret;

	if (req->wait == VVM_WAIT_PROBE)
		timeout = max(timeout / 2, 1UL);
	if (vq >= core->nvqs)
		return -EINVAL;

	mutex_lock(&core->submit_lock);
	raw_spin_lock_irqsave(&core->lock, flags);
	ret = vvm_state_errno(core->state);
	if (!ret) {
		req->vq = vq;
		req->submitted = jiffies;
		/* Without indirect descriptors this never allocates. */
		ret = virtqueue_add_sgs(core->vqs[vq], sgs, out_sgs, in_sgs,
					req, GFP_ATOMIC);
		/* -EIO: the ring is broken and will never answer again. */
		broken = ret == -EIO;
	}
	if (!ret) {
		list_add_tail(&req->list, &core->inflight);
		notify = virtqueue_kick_prepare(core->vqs[vq]);
		if (req->wait != VVM_WAIT_EVENT)
			vvm_watchdog_arm_locked(core, timeout);
	}
	if (broken)
		kthread_queue_work(core->worker, &core->kill_work);
	raw_spin_unlock_irqrestore(&core->lock, flags);

	if (notify)
		virtqueue_notify(core->vqs[vq]);
	mutex_unlock(&core->submit_lock);
	return ret;
}

struct vvm_call {
	struct vvm_request req;
	struct completion done;
	int status;
};

static void vvm_call_done(struct vvm_request *req, int status)
{
	struct vvm_call *call = container_of(req, struct vvm_call, req);

	call->status = status;
	complete(&call->done);
}

int vvm_core_call(struct vvm_core *core, unsigned int vq,
		  const void *cmd, size_t cmd_len,
		  const void *data, size_t data_len,
		  void *resp, size_t resp_len, u32 *resp_used)
{
	struct scatterlist cmd_sg, data_sg, resp_sg;
	struct scatterlist *sgs[3];
	unsigned int out = 0;
	struct vvm_call *call;
	void *data_copy = NULL;
	u8 *cmd_copy, *resp_buf;
	int ret;

	call = kzalloc(sizeof(*call) + cmd_len + resp_len, GFP_KERNEL);
	if (!call)
		return -ENOMEM;
	cmd_copy = (u8 *)(call + 1);
	resp_buf = cmd_copy + cmd_len;
	memcpy(cmd_copy, cmd, cmd_len);
	sg_init_one(&cmd_sg, cmd_copy, cmd_len);
	sgs[out++] = &cmd_sg;
	if (data && data_len) {
		data_copy = kmemdup(data, data_len, GFP_KERNEL);
		if (!data_copy) {
			kfree(call);
			return -ENOMEM;
		}
		sg_init_one(&data_sg, data_copy, data_len);
		sgs[out++] = &data_sg;
	}
	sg_init_one(&resp_sg, resp_buf, resp_len);
	sgs[out] = &resp_sg;

	vvm_request_init(&call->req, vvm_call_done, NULL);
	init_completion(&call->done);
	ret = vvm_core_submit(core, &call->req, vq, sgs, out, 1);
	if (!ret) {
		/* Bounded: the watchdog completes every request. */
		wait_for_completion(&call->done);
		ret = call->status;
	}
	if (!ret) {
		memcpy(resp, resp_buf, resp_len);
		if (resp_used)
			*resp_used = min_t(u32, call->req.used_len, resp_len);
	}
	kfree(data_copy);
	kfree(call);
	return ret;
}

int vvm_core_check_alive(struct vvm_core *core)
{
	unsigned long flags;
	int ret;

	raw_spin_lock_irqsave(&core->lock, flags);
	switch (core->state) {
	case VVM_CORE_LIVE:
		ret = 0;
		break;
	case VVM_CORE_DEAD:
		if (READ_ONCE(revive_on_open))
			kthread_queue_work(core->worker, &core->revive_work);
		ret = -EIO;
		break;
	case VVM_CORE_REVIVING:
		ret = -EIO;
		break;
	default:
		ret = -ENODEV;
		break;
	}
	raw_spin_unlock_irqrestore(&core->lock, flags);
	return ret;
}

bool vvm_core_holds(struct vvm_core *core, const void *owner)
{
	struct vvm_request *req;
	unsigned long flags;
	bool held = false;

	raw_spin_lock_irqsave(&core->lock, flags);
	list_for_each_entry(req, &core->inflight, list) {
		if (req->owner == owner) {
			held = true;
			break;
		}
	}
	raw_spin_unlock_irqrestore(&core->lock, flags);
	return held;
}

void vvm_core_kill(struct vvm_core *core)
{
	kthread_queue_work(core->worker, &core->kill_work);
	kthread_flush_work(&core->kill_work);
}

void vvm_core_flush(struct vvm_core *core)
{
	kthread_flush_worker(core->worker);
}
