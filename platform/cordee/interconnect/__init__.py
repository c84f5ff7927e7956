"""ctypes views of the interconnect stack as NCCL itself sees it: libnccl, the NCCL net plugin
ABI (aws-ofi-nccl) and libfabric; plus the NICs and CXI devices found in sysfs."""
