/* libcordeetestdep.so: a library a test plugin (fake_plugin.c -DWITH_DEP) is linked against, so
 * that a test can leave it off the library path, as aws-ofi-nccl without libfabric. */
int cordee_test_dep_value(void);
int cordee_test_dep_value(void) { return 42; }
