// SPDX-License-Identifier: GPL-2.0
/*
 * rt-hog: real-time load on one CPU, as a higher-priority real-time task
 * puts it on a busy PREEMPT_RT system. Pinned to --cpu, SCHED_FIFO at
 * --priority, it spins for --busy-ms, sleeps --idle-ms, and so on for
 * --seconds. A threaded interrupt handler of lower priority on that CPU
 * waits up to --busy-ms for its turn; a hard interrupt handler does not.
 *
 *   rt-hog --cpu 1 --priority 60 --busy-ms 100 --idle-ms 5 --seconds 60
 *
 * Exit status: 0 after --seconds, 1 when the scheduling could not be set.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static long parse_count(const char *text, const char *name)
{
	char *end;
	long value = strtol(text, &end, 10);

	if (*text == '\0' || *end != '\0' || value < 0) {
		fprintf(stderr, "rt-hog: --%s takes a number, not `%s`\n", name,
			text);
		exit(1);
	}
	return value;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "cpu", required_argument, NULL, 'c' },
		{ "priority", required_argument, NULL, 'p' },
		{ "busy-ms", required_argument, NULL, 'b' },
		{ "idle-ms", required_argument, NULL, 'i' },
		{ "seconds", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 },
	};
	long cpu = 0, priority = 60, busy_ms = 100, idle_ms = 5, seconds = 10;
	struct sched_param param = { 0 };
	struct timespec idle;
	cpu_set_t set;
	long end;
	int opt;

	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			cpu = parse_count(optarg, "cpu");
			break;
		case 'p':
			priority = parse_count(optarg, "priority");
			break;
		case 'b':
			busy_ms = parse_count(optarg, "busy-ms");
			break;
		case 'i':
			idle_ms = parse_count(optarg, "idle-ms");
			break;
		case 's':
			seconds = parse_count(optarg, "seconds");
			break;
		default:
			fprintf(stderr,
				"usage: rt-hog [--cpu N] [--priority P] [--busy-ms B] [--idle-ms I] [--seconds S]\n");
			return 1;
		}
	}
	if (cpu >= CPU_SETSIZE) {
		fprintf(stderr, "rt-hog: no CPU %ld\n", cpu);
		return 1;
	}
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0) {
		fprintf(stderr, "rt-hog: CPU %ld: %s\n", cpu, strerror(errno));
		return 1;
	}
	param.sched_priority = (int)priority;
	if (sched_setscheduler(0, SCHED_FIFO, &param) < 0) {
		fprintf(stderr, "rt-hog: SCHED_FIFO %ld: %s\n", priority,
			strerror(errno));
		return 1;
	}
	idle.tv_sec = idle_ms / 1000;
	idle.tv_nsec = (idle_ms % 1000) * 1000000L;
	end = now_ms() + seconds * 1000L;
	while (now_ms() < end) {
		long until = now_ms() + busy_ms;

		while (now_ms() < until)
			;
		nanosleep(&idle, NULL);
	}
	return 0;
}
