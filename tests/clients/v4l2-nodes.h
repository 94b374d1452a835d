/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Finding a device's nodes through sysfs, for the test clients (included,
 * not compiled alone).
 */
#ifndef VDV_V4L2_NODES_H
#define VDV_V4L2_NODES_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

/*
 * The /dev path of the video node whose sysfs name is @name, in a static
 * buffer; NULL if there is none.
 */
static inline const char *video_node_named(const char *name)
{
	static char path[300];
	struct dirent *de;
	DIR *dir;

	dir = opendir("/sys/class/video4linux");
	if (!dir)
		return NULL;
	while ((de = readdir(dir))) {
		char name_path[300], node_name[64] = "";
		FILE *f;

		if (strncmp(de->d_name, "video", 5))
			continue;
		snprintf(name_path, sizeof(name_path),
			 "/sys/class/video4linux/%s/name", de->d_name);
		f = fopen(name_path, "r");
		if (!f)
			continue;
		if (!fgets(node_name, sizeof(node_name), f))
			node_name[0] = 0;
		fclose(f);
		node_name[strcspn(node_name, "\n")] = 0;
		if (!strcmp(node_name, name)) {
			snprintf(path, sizeof(path), "/dev/%s", de->d_name);
			closedir(dir);
			return path;
		}
	}
	closedir(dir);
	return NULL;
}

/*
 * The media device registered on the same parent device as the video node
 * at @video_path, opened read-write; -1 with errno set (ENOENT when there
 * is none).
 */
static inline int open_media_beside(const char *video_path)
{
	char dir_path[400], dev_path[300];
	const char *base = strrchr(video_path, '/');
	struct dirent *de;
	DIR *dir;

	base = base ? base + 1 : video_path;
	snprintf(dir_path, sizeof(dir_path),
		 "/sys/class/video4linux/%s/device", base);
	dir = opendir(dir_path);
	if (!dir)
		return -1;
	while ((de = readdir(dir))) {
		if (strncmp(de->d_name, "media", 5))
			continue;
		snprintf(dev_path, sizeof(dev_path), "/dev/%s", de->d_name);
		closedir(dir);
		return open(dev_path, O_RDWR);
	}
	closedir(dir);
	errno = ENOENT;
	return -1;
}

#endif
