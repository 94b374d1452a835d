/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared core of the virtio video mem2mem nodes: request submission on
 * virtqueues, the split (hard/threaded) completion path, the per-request
 * watchdog and the "device dead" state.
 *
 * Contexts:
 *
 * - The virtqueue callback (hard half) may run in hard interrupt context. It
 *   only harvests used buffers into a list under a raw spinlock and queues
 *   the threaded half.
 * - The threaded half is a kthread worker owned by the core, one thread at
 *   SCHED_FIFO 50: the priority of the interrupt threads on PREEMPT_RT, the
 *   callback's own there, so completions wait for no real-time task below
 *   the interrupts. The watchdog's timer fires in hard interrupt context and
 *   only queues the watchdog's work there. Every &vvm_request.complete
 *   callback and every &vvm_core_ops callback runs in that thread, one at a
 *   time, in process context: it may take
 *   mutexes and call vb2_buffer_done(), v4l2_m2m_job_finish() and
 *   v4l2_m2m_buf_done_and_job_finish(). It must not wait for another
 *   request (vvm_core_call() from it would deadlock); hand such work to
 *   another thread, of the same priority where it must not lag behind
 *   completions (the decoder's ctx_worker).
 *
 * Ownership: vdev->priv must point at the &struct vvm_core (embed it in the
 * node's state and use container_of()).
 */
#ifndef VVM_CORE_H
#define VVM_CORE_H

#include <linux/completion.h>
#include <linux/hrtimer.h>
#include <linux/kthread.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/scatterlist.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/virtio.h>

#define VVM_MAX_VQS 2

struct vvm_core;
struct vvm_request;

/**
 * typedef vvm_complete_t - completion of a request, called exactly once
 * @req: the request; the core no longer references it, it may be freed.
 * @status: 0 when the device answered (@req->used_len holds the number of
 *	bytes it wrote); -ETIMEDOUT for the request whose watchdog fired;
 *	-EIO for every other request failed because the device was declared
 *	dead; -ENODEV when the device is being removed.
 *
 * Runs in the threaded half (process context, may sleep).
 */
typedef void (*vvm_complete_t)(struct vvm_request *req, int status);

/**
 * enum vvm_wait - how long the device may legitimately hold a request
 * @VVM_WAIT_TIMED: it answers within the watchdog period (timeout_ms), or
 *	it is dead. The period counts the device's silence: it starts at
 *	submission or at the device's latest answer on any virtqueue,
 *	whichever is later, so requests queued behind others at the backend
 *	do not expire while the device keeps answering. The default.
 * @VVM_WAIT_LONG: it answers when it has something to say (a picture
 *	buffer waits for a picture, a drain for the last one). While such a
 *	request is in flight and no timed one is, the core checks that the
 *	backend still lives with &vvm_core_ops.ping every quarter watchdog
 *	period.
 * @VVM_WAIT_PROBE: a liveness ping the device answers at once; it has half
 *	a watchdog period, so that with a ping every quarter period a death
 *	is noticed within one period.
 * @VVM_WAIT_EVENT: an event buffer; the device may keep it forever.
 */
enum vvm_wait {
	VVM_WAIT_TIMED,
	VVM_WAIT_LONG,
	VVM_WAIT_PROBE,
	VVM_WAIT_EVENT,
};

/**
 * struct vvm_request - one descriptor chain handed to the device
 * @complete: called once, in the threaded half, when the request ends.
 * @priv: owner's cookie, untouched by the core.
 * @used_len: bytes the device wrote, valid when the status is 0.
 * @wait: &enum vvm_wait, %VVM_WAIT_TIMED after vvm_request_init().
 * @owner: owner's tag for vvm_core_holds() (e.g. the vb2 queue), NULL
 *	after vvm_request_init().
 * @list: core-private: in-flight or done list.
 * @submitted: core-private: jiffies at submission.
 * @vq: core-private: index of the virtqueue the request sits on.
 *
 * Initialise with vvm_request_init(). The memory the scatterlists point at
 * must stay valid until @complete has run.
 */
struct vvm_request {
	vvm_complete_t complete;
	void *priv;
	u32 used_len;
	enum vvm_wait wait;
	const void *owner;
	struct list_head list;
	unsigned long submitted;
	unsigned int vq;
};

/**
 * struct vvm_core_ops - node callbacks, run in the threaded half
 * @dead: the device was declared dead (@err = -EIO) or is being removed
 *	(@err = -ENODEV). Every in-flight request has already completed with
 *	an error. Fail every job the node still holds (queued m2m jobs,
 *	buffers not yet sent) with VB2_BUF_STATE_ERROR, e.g. by
 *	vb2_queue_error() and finishing the current m2m job.
 * @revive: the virtqueues were re-created after a death and the device is
 *	DRIVER_OK again. Re-post long-lived buffers (event queue) and, unless
 *	@ping is set (the core then pings), submit at least one request the
 *	device answers at once: the first answer ends the dead state.
 *	Optional; without it the core cannot recover.
 * @ping: submit one %VVM_WAIT_TIMED request the device answers at once,
 *	proving the backend alive. Return 0 also when the previous ping is
 *	still under way. Needed by nodes that use %VVM_WAIT_LONG.
 */
struct vvm_core_ops {
	void (*dead)(struct vvm_core *core, int err);
	int (*revive)(struct vvm_core *core);
	int (*ping)(struct vvm_core *core);
};

/**
 * enum vvm_core_state - liveness of the device
 * @VVM_CORE_LIVE: requests are accepted.
 * @VVM_CORE_DEAD: the watchdog fired, a virtqueue broke (the device returned
 *	a buffer the ring never gave it) or a node killed the device with
 *	vvm_core_kill(); the device is reset and the virtqueues are gone.
 *	Requests fail with -EIO at once.
 * @VVM_CORE_REVIVING: virtqueues re-created, waiting for the first answer of
 *	the backend. Requests are accepted, vvm_core_check_alive() still
 *	fails with -EIO.
 * @VVM_CORE_REMOVED: the device is being removed. Requests fail with -ENODEV.
 */
enum vvm_core_state {
	VVM_CORE_LIVE,
	VVM_CORE_DEAD,
	VVM_CORE_REVIVING,
	VVM_CORE_REMOVED,
};

/**
 * struct vvm_core - per virtio device core state
 * @vdev: the virtio device.
 * @ops: node callbacks.
 * @nvqs: number of virtqueues.
 * @premapped: set by the node before vvm_core_init(): every scatterlist
 *	entry it submits carries the address the device reads in
 *	sg_dma_address() (see vvm_core_premap()), so that buffers without
 *	struct pages, such as imported DMABUFs, can be handed over.
 * @vqs: the virtqueues (NULL while dead).
 * @vq_names: names given to the virtqueues.
 * @lock: raw spinlock guarding @state, @inflight, @done and the virtqueues'
 *	rings; the only lock the hard half takes.
 * @state: &enum vvm_core_state.
 * @inflight: requests the device owns.
 * @done: requests the hard half harvested, waiting for the threaded half.
 * @last_answer: jiffies of the latest used buffer, on any virtqueue.
 * @submit_lock: serialises submitters and the death/revival of the
 *	virtqueues.
 * @worker: the threaded half.
 * @complete_work: runs completions.
 * @watchdog_timer: fires, in hard interrupt context, on the earliest request
 *	deadline and queues @watchdog_work.
 * @watchdog_work: fails the device when a deadline has passed.
 * @revive_work: re-creates the virtqueues after a death.
 * @kill_work: declares the device dead (a broken virtqueue, vvm_core_kill()).
 * @remove_work: fails everything on removal, in the threaded half.
 */
struct vvm_core {
	struct virtio_device *vdev;
	const struct vvm_core_ops *ops;
	unsigned int nvqs;
	bool premapped;
	struct virtqueue *vqs[VVM_MAX_VQS];
	const char *vq_names[VVM_MAX_VQS];

	raw_spinlock_t lock;
	enum vvm_core_state state;
	struct list_head inflight;
	struct list_head done;
	unsigned long last_answer;

	struct mutex submit_lock; /* see @submit_lock above */
	struct kthread_worker *worker;
	struct kthread_work complete_work;
	struct hrtimer watchdog_timer;
	struct kthread_work watchdog_work;
	struct kthread_work revive_work;
	struct kthread_work kill_work;
	struct kthread_work remove_work;
};

/**
 * vvm_fifo_worker_create() - a kthread worker for completion-side work
 * @vdev: the virtio device the worker serves.
 * @prefix: the thread's name before the device's name.
 *
 * The worker runs at SCHED_FIFO 50, the priority of the interrupt threads
 * on PREEMPT_RT, so that a real-time load below them delays its work no
 * more than their own.
 *
 * Return: the worker, or an ERR_PTR().
 */
struct kthread_worker *vvm_fifo_worker_create(struct virtio_device *vdev,
					      const char *prefix);

/**
 * vvm_core_init() - set up the core and find the virtqueues
 * @core: core embedded in the node's state; vdev->priv is set to it.
 * @vdev: the virtio device being probed.
 * @ops: node callbacks.
 * @nvqs: number of virtqueues, at most %VVM_MAX_VQS.
 * @names: virtqueue names.
 *
 * The device is not DRIVER_OK yet: call vvm_core_ready() once the node has
 * finished its own setup. On failure nothing needs undoing.
 *
 * Return: 0 or a negative errno.
 */
int vvm_core_init(struct vvm_core *core, struct virtio_device *vdev,
		  const struct vvm_core_ops *ops, unsigned int nvqs,
		  const char * const names[]);

/**
 * vvm_core_ready() - set DRIVER_OK; requests may be submitted from now on
 * @core: the core.
 */
void vvm_core_ready(struct vvm_core *core);

/**
 * vvm_core_remove() - fail everything and release the virtqueues
 * @core: the core.
 *
 * Enters %VVM_CORE_REMOVED, resets the device so it can no longer write into
 * guest memory, completes every request with -ENODEV, calls
 * &vvm_core_ops.dead with -ENODEV and deletes the virtqueues. Always
 * returns. Later submissions fail with -ENODEV, so open file handles may
 * outlive this call; call vvm_core_release() when the last one is gone.
 */
void vvm_core_remove(struct vvm_core *core);

/**
 * vvm_core_release() - free the threaded half
 * @core: the core, after vvm_core_remove() (or a failed probe after
 *	vvm_core_init()), once nothing can call into it any more.
 */
void vvm_core_release(struct vvm_core *core);

/**
 * vvm_request_init() - prepare a request for vvm_core_submit()
 * @req: the request.
 * @complete: completion callback.
 * @priv: owner's cookie.
 */
void vvm_request_init(struct vvm_request *req, vvm_complete_t complete,
		      void *priv);

/**
 * vvm_core_submit() - hand a descriptor chain to the device
 * @core: the core.
 * @req: initialised request, not in flight.
 * @vq: virtqueue index.
 * @sgs: @out_sgs device-readable then @in_sgs device-writable scatterlists.
 * @out_sgs: number of device-readable scatterlists.
 * @in_sgs: number of device-writable scatterlists.
 *
 * Every scatterlist entry takes one ring descriptor: the driver refuses
 * indirect descriptors, whose tables the ring would allocate and free under
 * the core's raw spinlock, which PREEMPT_RT forbids. A chain longer than the
 * free part of the ring fails with -ENOSPC. Process context only (may
 * sleep); the threaded half may submit.
 *
 * Return: 0 when queued (@req->complete will run exactly once); -EIO if
 * the device is dead or the virtqueue broke (the device is then declared
 * dead in the threaded half), -ENODEV if it is removed, -ENOSPC if the
 * virtqueue is full, or another negative errno. On error @req->complete is
 * not called.
 */
int vvm_core_submit(struct vvm_core *core, struct vvm_request *req,
		    unsigned int vq, struct scatterlist *sgs[],
		    unsigned int out_sgs, unsigned int in_sgs);

/**
 * vvm_core_call() - synchronous command: send, wait, copy the reply
 * @core: the core.
 * @vq: virtqueue index.
 * @cmd: request bytes (any memory; the core copies it).
 * @cmd_len: request length.
 * @data: optional second device-readable part (e.g. memory entries), or NULL.
 * @data_len: its length.
 * @resp: reply buffer (any memory).
 * @resp_len: reply buffer length.
 * @resp_used: if not NULL, receives the number of bytes the device wrote.
 *
 * Waits at most the watchdog period (module parameter timeout_ms), in
 * uninterruptible sleep bounded by the watchdog. Must not be called from the
 * threaded half.
 *
 * Return: 0 when the device answered, else the request's error status (see
 * &vvm_complete_t) or a submission error.
 */
int vvm_core_call(struct vvm_core *core, unsigned int vq,
		  const void *cmd, size_t cmd_len,
		  const void *data, size_t data_len,
		  void *resp, size_t resp_len, u32 *resp_used);

/**
 * vvm_core_check_alive() - may a new open or job start?
 * @core: the core.
 *
 * Call it from open() and before starting a job. When the device is dead it
 * fails at once instead of waiting out a watchdog period, and, if the module
 * parameter revive_on_open is set, starts a revival in the background (see
 * &vvm_core_ops.revive).
 *
 * Return: 0 if live, -EIO if dead or still reviving, -ENODEV if removed.
 */
int vvm_core_check_alive(struct vvm_core *core);

/**
 * vvm_core_holds() - does the device still own a request of @owner?
 * @core: the core.
 * @owner: the &vvm_request.owner tag to look for.
 *
 * After a command that makes the device return every buffer of a queue
 * (and vvm_core_flush()), a request of that queue still in flight means the
 * device broke its word: nothing bounds when it writes into that memory.
 *
 * Return: true if a request tagged @owner is in flight.
 */
bool vvm_core_holds(struct vvm_core *core, const void *owner);

/**
 * vvm_core_kill() - declare the device dead now
 * @core: the core.
 *
 * For a device that broke the protocol in a way the node detected (it
 * refused to give buffers back, or kept them past its answer). Resets the
 * device and completes every in-flight request with -EIO before returning,
 * as the watchdog does; a device already dead or removed is left as it is.
 * Process context; must not be called from the threaded half.
 */
void vvm_core_kill(struct vvm_core *core);

/**
 * vvm_core_flush() - wait until every harvested completion, and a device
 *	death in progress, has run
 * @core: the core.
 *
 * Must not be called from the threaded half.
 */
void vvm_core_flush(struct vvm_core *core);

/**
 * vvm_core_dma_device() - the device vb2 queues map buffers for
 * @core: the core.
 *
 * The virtio device's transport parent (the PCI function): its DMA
 * addresses are what the host sees in descriptors and memory entries.
 *
 * Return: the struct device to set as &vb2_queue.dev.
 */
struct device *vvm_core_dma_device(struct vvm_core *core);

/**
 * vvm_core_premap() - give kernel memory its device address
 * @sg: scatterlist entries set up with sg_set_page()/sg_init_one().
 * @n: number of entries.
 *
 * For a &vvm_core.premapped core. The ring does not use the DMA API (the
 * driver refuses VIRTIO_F_ACCESS_PLATFORM and translating IOMMUs), so the
 * device reads guest-physical addresses.
 */
void vvm_core_premap(struct scatterlist *sg, unsigned int n);

/**
 * vvm_core_timeout_jiffies() - the watchdog period
 *
 * Return: the module parameter timeout_ms in jiffies (at least 1).
 */
unsigned long vvm_core_timeout_jiffies(void);

#endif /* VVM_CORE_H */
