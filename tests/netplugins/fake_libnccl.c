/* Stands in for libnccl.so.2 where only the net plugin versions it looks for matter: NCCL keeps
 * the names it hands to dlsym ("ncclNetPlugin_vN") as string literals, and cordee reads them.
 * Build with -DNEWEST=N (6..12): this "NCCL" looks for ncclNetPlugin_vN down to v6, as NCCL
 * 2.2x does. It is no NCCL otherwise (ncclGetVersion and the rest are missing). */
#ifndef NEWEST
#error "compile with -DNEWEST=6..12"
#endif

const char *const fake_nccl_net_symbols[] = {
#if NEWEST >= 12
    "ncclNetPlugin_v12",
#endif
#if NEWEST >= 11
    "ncclNetPlugin_v11",
#endif
#if NEWEST >= 10
    "ncclNetPlugin_v10",
#endif
#if NEWEST >= 9
    "ncclNetPlugin_v9",
#endif
#if NEWEST >= 8
    "ncclNetPlugin_v8",
#endif
#if NEWEST >= 7
    "ncclNetPlugin_v7",
#endif
    "ncclNetPlugin_v6",
};
