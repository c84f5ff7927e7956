"""Shared fixtures. `slurm_cluster`: one real Slurm cluster (munged, slurmctld, 4 slurmd in
network namespaces; see the slurmtest package) for the whole session, always torn down. Four nodes:
the preflight pairs nodes to isolate a bad one; other tests use two of them with -N2."""

from __future__ import annotations

import pytest
from slurmtest import SlurmCluster, unavailable_reason


@pytest.fixture(scope="session")
def slurm_cluster():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(nodes=4, cpus_per_node=4)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
