"""The NCCL net plugin (aws-ofi-nccl) as NCCL finds and sees it: name and nccl.conf resolution,
the ABI structs, the probe that runs in a child process, the plugin's log formatting."""
