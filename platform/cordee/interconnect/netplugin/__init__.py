"""The NCCL net plugin (aws-ofi-nccl) as NCCL finds and sees it: resolve (NCCL_NET_PLUGIN and
nccl.conf), probe (records and the parent side of the probe), probe_child (the probe, in a child
process), abi (ctypes structs of ncclNet_v8..v12), nccl_versions (the ABI versions a libnccl looks
for), loadfail (why a plugin file did not load), logformat (the plugin logger's printf)."""
