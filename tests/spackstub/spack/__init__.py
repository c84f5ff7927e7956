"""Stub of Spack's package API for tests (see tests/spackstub/README.md)."""
