/* A shared library that is not a plugin cordee understands: no ncclNetPlugin_v8..v12. With
 * -DWITH_OLD it exports ncclNetPlugin_v6 and ncclNetPlugin_v7 (older ABIs that NCCL itself
 * still accepts); the contents do not matter, nobody may call them. */
int nosym_plugin_marker(void) { return 42; }

#ifdef WITH_OLD
const void *ncclNetPlugin_v6[20] = {0};
const void *ncclNetPlugin_v7[20] = {0};
#endif
