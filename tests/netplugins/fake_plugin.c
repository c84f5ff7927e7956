/* A well-behaved fake NCCL net plugin for cordee's tests. Build with -DABI=8..12 and
 * -include VALUES.h, where the test writes PLUGIN_NAME and FAKE_DEVICES (an initializer of
 * struct fake_dev[]): every property the plugin reports comes from the test's own values.
 * Environment: FAKE_NET_INIT_RC (init's return code; when not 0, init first logs why at WARN level,
 * as aws-ofi-nccl does), FAKE_NET_SETTING (echoed in the log). With -DWITH_DEP the plugin calls
 * into libcordeetestdep.so (dep_lib.c), which it is linked against. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netplugin_test.h"

struct fake_dev {
  const char *name, *pci;
  uint64_t guid;
  int ptr, reg, flush, speed, port;
  float latency;
  int max_comms, max_recvs, type, version, vndevs, vdevs[8];
  size_t max_p2p, max_coll;
  int max_mreq, rail, plane;
};

static const struct fake_dev devs[] = FAKE_DEVICES;
#define NDEV ((int)(sizeof devs / sizeof devs[0]))

static logger_t logger;
#ifdef WITH_DEP
int cordee_test_dep_value(void);
#endif
#if ABI >= 11
static int init_ctx_marker; /* the context init hands out; finalize must get it back */
#endif

/* Logs fmt with its arguments, then glibc's own rendering of the same call as a "%s" message,
 * so the test can compare cordee's formatting of the variadic arguments with printf's. */
#define LOG_TWICE(level, fmt, ...)                                                    \
  do {                                                                                \
    char rendered_[512];                                                              \
    logger(level, SUB_NET, __FILE__, __LINE__, fmt, __VA_ARGS__);                     \
    snprintf(rendered_, sizeof rendered_, fmt, __VA_ARGS__);                          \
    logger(level, SUB_NET, __FILE__, __LINE__, "%s", rendered_);                      \
  } while (0)

static int common_init(logger_t log) {
  logger = log;
  const char *setting = getenv("FAKE_NET_SETTING");
  printf("fake plugin banner on stdout\n"); /* must not spoil the probe's JSON */
  fflush(stdout);
  logger(LOG_INFO, SUB_INIT | SUB_NET, __FILE__, __LINE__, "%s init: %d devices, setting=%s", PLUGIN_NAME, NDEV,
         setting ? setting : "(unset)");
  LOG_TWICE(LOG_WARN, "ints %d %u %ld %lu %x %llx %hd %hhu %c %5d|%-5d|%05d %zu %%", -1, 4000000000u,
            -1234567890123L, 18446744073709551615UL, 0xbeef, 0x1234567890abcdefULL, (short)-3,
            (unsigned char)200, 'Q', 42, 42, 42, (size_t)7);
  LOG_TWICE(LOG_INFO, "mixed %s %.2f %d %e %s %g %p %*d %.3s %+.1f", "str", (double)devs[0].latency, 3, 1e-9,
            PLUGIN_NAME, 0.5, (void *)0x1000, 6, 99, "abcdef", 2.25);
  /* nine doubles: the ninth travels on the stack among the integers, beyond cordee's formatting */
  logger(LOG_INFO, SUB_NET, __FILE__, __LINE__, "nine doubles %g %g %g %g %g %g %g %g %g", 1.0, 2.0, 3.0, 4.0, 5.0,
         6.0, 7.0, 8.0, 9.0);
#ifdef WITH_DEP
  logger(LOG_INFO, SUB_INIT, __FILE__, __LINE__, "libcordeetestdep says %d", cordee_test_dep_value());
#endif
  const char *rc = getenv("FAKE_NET_INIT_RC");
  if (rc && atoi(rc) != RC_SUCCESS) {
    logger(LOG_INFO, SUB_INIT, __FILE__, __LINE__, "looking for a usable NIC");
    logger(LOG_WARN, SUB_INIT, __FILE__, __LINE__, "no usable NIC: %s", "all links down (FAKE_NET_INIT_RC)");
  }
  return rc ? atoi(rc) : RC_SUCCESS;
}

#if ABI <= 9
static int fake_init(logger_t log) { return common_init(log); }
#elif ABI == 10
static int fake_init(logger_t log, void *profiler) {
  int rc = common_init(log);
  logger(LOG_INFO, SUB_INIT, __FILE__, __LINE__, "profiler callback %s", profiler ? "set" : "NULL");
  return rc;
}
#else
static int fake_init(void **ctx, uint64_t comm_id, comm_config_t *config, logger_t log, void *profiler) {
  int rc = common_init(log);
  *ctx = &init_ctx_marker;
  logger(LOG_INFO, SUB_INIT, __FILE__, __LINE__, "commId %llu trafficClass %d profiler %s",
         (unsigned long long)comm_id, config ? config->trafficClass : -999, profiler ? "set" : "NULL");
  return rc;
}

static int fake_finalize(void *ctx) {
  logger(LOG_INFO, SUB_INIT, __FILE__, __LINE__, "finalize with %s context",
         ctx == &init_ctx_marker ? "the init" : "a foreign");
  return RC_SUCCESS;
}
#endif

static int fake_devices(int *ndev) {
  *ndev = NDEV;
  return RC_SUCCESS;
}

static int fake_get_properties(int dev, props_t *props) {
  if (dev < 0 || dev >= NDEV) return RC_INTERNAL;
  const struct fake_dev *d = &devs[dev];
  memset(props, 0xA5, sizeof *props); /* anything the plugin forgets shows up as garbage */
  props->name = (char *)d->name;
  props->pciPath = (char *)d->pci;
  props->guid = d->guid;
  props->ptrSupport = d->ptr;
  props->regIsGlobal = d->reg;
  props->speed = d->speed;
  props->port = d->port;
  props->latency = d->latency;
  props->maxComms = d->max_comms;
  props->maxRecvs = d->max_recvs;
  props->netDeviceType = d->type;
  props->netDeviceVersion = d->version;
#if ABI >= 9
  props->forceFlush = d->flush;
  props->vProps.ndevs = d->vndevs;
  for (int i = 0; i < VDEVS_MAX; i++) props->vProps.devs[i] = d->vdevs[i];
  props->maxP2pBytes = d->max_p2p;
  props->maxCollBytes = d->max_coll;
#endif
#if ABI >= 11
  props->maxMultiRequestSize = d->max_mreq;
#endif
#if ABI >= 12
  props->railId = (int16_t)d->rail;
  props->planeId = (int16_t)d->plane;
#endif
  return RC_SUCCESS;
}

static int not_used(void) { return RC_INTERNAL; }

const net_t PLUGIN_SYMBOL = {
    .name = PLUGIN_NAME,
    .init = fake_init,
    .devices = fake_devices,
    .getProperties = fake_get_properties,
    .unused = {not_used, not_used, not_used, not_used, not_used, not_used, not_used, not_used, not_used, not_used,
               not_used, not_used, not_used, not_used, not_used},
#if ABI >= 9
    .makeVDevice = not_used,
#endif
#if ABI >= 11
    .finalize = fake_finalize,
    .setNetAttr = not_used,
#endif
};

#ifdef EXTRA_V13
/* A newer ABI than cordee knows, full of NULLs: cordee must not touch it. */
const void *ncclNetPlugin_v13[24] = {0};
#endif
