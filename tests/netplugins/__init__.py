"""Test NCCL net plugins: C sources (one per behaviour) and build.py, which compiles them with gcc."""
