/* A v8 plugin that dies: CRASH_PHASE = load (constructor) | init | devices | getProperties,
 * CRASH_HOW = segv (default) | abort | exit. It logs one message before dying. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "netplugin_test.h"

static logger_t logger;

static void maybe_die(const char *phase) {
  const char *when = getenv("CRASH_PHASE");
  if (!when || strcmp(when, phase) != 0) return;
  if (logger) logger(LOG_WARN, SUB_NET, __FILE__, __LINE__, "about to die in %s", phase);
  const char *how = getenv("CRASH_HOW");
  if (how && strcmp(how, "abort") == 0) abort();
  if (how && strcmp(how, "exit") == 0) exit(3);
  *(volatile int *)0 = 1; /* a real segfault, not raise() */
}

__attribute__((constructor)) static void on_load(void) { maybe_die("load"); }

static int crash_init(logger_t log) {
  logger = log;
  maybe_die("init");
  return RC_SUCCESS;
}

static int crash_devices(int *ndev) {
  maybe_die("devices");
  *ndev = 2;
  return RC_SUCCESS;
}

static int crash_get_properties(int dev, props_t *props) {
  memset(props, 0, sizeof *props);
  props->name = "crash0";
  if (dev == 1) maybe_die("getProperties");
  return RC_SUCCESS;
}

const net_t PLUGIN_SYMBOL = {
    .name = "crash",
    .init = crash_init,
    .devices = crash_devices,
    .getProperties = crash_get_properties,
};
