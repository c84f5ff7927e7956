/* Test-only C view of the NCCL net plugin ABI, written for cordee's tests from the layouts in
 * REFERENCE.md section 5 (checked against NCCL's net_v8.h .. net_v12.h). Every offset and size
 * is asserted below, so a fake plugin built from this header has exactly NCCL's layout.
 * Compile with -DABI=8|9|10|11|12. */
#ifndef CORDEE_NETPLUGIN_TEST_H
#define CORDEE_NETPLUGIN_TEST_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#ifndef ABI
#error "compile with -DABI=8|9|10|11|12"
#endif

enum { LOG_VERSION = 1, LOG_WARN = 2, LOG_INFO = 3 };
enum { SUB_INIT = 0x1, SUB_NET = 0x10 };
enum { RC_SUCCESS = 0, RC_SYSTEM = 2, RC_INTERNAL = 3 };

typedef void (*logger_t)(int level, unsigned long flags, const char *file, int line, const char *fmt, ...);

#if ABI >= 12
#define VDEVS_MAX 8
#else
#define VDEVS_MAX 4
#endif

typedef struct {
  char *name;
  char *pciPath;
  uint64_t guid;
  int ptrSupport;
  int regIsGlobal;
#if ABI >= 9
  int forceFlush;
#endif
  int speed;
  int port;
  float latency;
  int maxComms;
  int maxRecvs;
  int netDeviceType;
  int netDeviceVersion;
#if ABI >= 9
  struct {
    int ndevs;
    int devs[VDEVS_MAX];
  } vProps;
  size_t maxP2pBytes;
  size_t maxCollBytes;
#endif
#if ABI >= 11
  int maxMultiRequestSize;
#endif
#if ABI >= 12
  int16_t railId;
  int16_t planeId;
#endif
} props_t;

#if ABI == 8
static_assert(offsetof(props_t, ptrSupport) == 24 && offsetof(props_t, regIsGlobal) == 28, "v8 head");
static_assert(offsetof(props_t, speed) == 32 && offsetof(props_t, port) == 36, "v8 speed/port");
static_assert(offsetof(props_t, latency) == 40 && offsetof(props_t, maxComms) == 44, "v8 latency");
static_assert(offsetof(props_t, maxRecvs) == 48 && offsetof(props_t, netDeviceType) == 52, "v8 recvs");
static_assert(offsetof(props_t, netDeviceVersion) == 56 && sizeof(props_t) == 64, "v8 size");
#else
static_assert(offsetof(props_t, guid) == 16 && offsetof(props_t, forceFlush) == 32, "v9+ head");
static_assert(offsetof(props_t, speed) == 36 && offsetof(props_t, port) == 40, "v9+ speed/port");
static_assert(offsetof(props_t, latency) == 44 && offsetof(props_t, maxComms) == 48, "v9+ latency");
static_assert(offsetof(props_t, maxRecvs) == 52 && offsetof(props_t, netDeviceType) == 56, "v9+ recvs");
static_assert(offsetof(props_t, netDeviceVersion) == 60 && offsetof(props_t, vProps) == 64, "v9+ vProps");
#if ABI <= 11
static_assert(offsetof(props_t, maxP2pBytes) == 88 && offsetof(props_t, maxCollBytes) == 96, "v9-v11 max");
#endif
#if ABI <= 10
static_assert(sizeof(props_t) == 104, "v9/v10 size");
#elif ABI == 11
static_assert(offsetof(props_t, maxMultiRequestSize) == 104 && sizeof(props_t) == 112, "v11 size");
#else
static_assert(offsetof(props_t, maxP2pBytes) == 104 && offsetof(props_t, maxCollBytes) == 112, "v12 max");
static_assert(offsetof(props_t, maxMultiRequestSize) == 120, "v12 maxMultiRequestSize");
static_assert(offsetof(props_t, railId) == 124 && offsetof(props_t, planeId) == 126, "v12 rail/plane");
static_assert(sizeof(props_t) == 128, "v12 size");
#endif
#endif

typedef struct {
  int trafficClass;
} comm_config_t; /* ncclNetCommConfig_v10..v12_t */

#if ABI <= 9
typedef int (*init_fn)(logger_t log);
#elif ABI == 10
typedef int (*init_fn)(logger_t log, void *profiler);
#else
typedef int (*init_fn)(void **ctx, uint64_t comm_id, comm_config_t *config, logger_t log, void *profiler);
#endif

typedef int (*stub_fn)(void);

/* ncclNet_vN_t: name, init, devices, getProperties, then 15 slots cordee never calls
 * (listen .. irecvConsumed), makeVDevice (v9+), finalize and setNetAttr (v11+). */
typedef struct {
  const char *name;
  init_fn init;
  int (*devices)(int *ndev);
  int (*getProperties)(int dev, props_t *props);
  stub_fn unused[15];
#if ABI >= 9
  stub_fn makeVDevice;
#endif
#if ABI >= 11
  int (*finalize)(void *ctx);
  stub_fn setNetAttr;
#endif
} net_t;

#if ABI == 8
static_assert(sizeof(net_t) == 19 * sizeof(void *), "v8 has 19 slots");
#elif ABI <= 10
static_assert(sizeof(net_t) == 20 * sizeof(void *), "v9/v10 have 20 slots");
#else
static_assert(sizeof(net_t) == 22 * sizeof(void *), "v11/v12 have 22 slots");
#endif

#define STR_(x) #x
#define STR(x) STR_(x)
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define PLUGIN_SYMBOL CAT(ncclNetPlugin_v, ABI)

#endif
