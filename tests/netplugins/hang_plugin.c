/* A v8 plugin whose init never returns. Before hanging it forks a helper process (which
 * sleeps for ever too) and writes the helper's pid to $HANG_PIDFILE: the test checks that the
 * probe's timeout killed the whole process group, helper included. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#include "netplugin_test.h"

static int hang_init(logger_t log) {
  pid_t helper = fork();
  if (helper == 0) {
    for (;;) pause();
  }
  const char *pidfile = getenv("HANG_PIDFILE");
  if (pidfile) {
    FILE *f = fopen(pidfile, "w");
    if (f) {
      fprintf(f, "%d\n", (int)helper);
      fclose(f);
    }
  }
  log(LOG_INFO, SUB_INIT, __FILE__, __LINE__, "hanging in init, helper pid %d", (int)helper);
  for (;;) pause();
  return RC_SUCCESS;
}

static int hang_devices(int *ndev) {
  *ndev = 0;
  return RC_SUCCESS;
}

const net_t PLUGIN_SYMBOL = {.name = "hang", .init = hang_init, .devices = hang_devices};
