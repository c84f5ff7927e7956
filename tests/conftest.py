"""Shared fixtures. `slurm_cluster`: one real Slurm cluster (munged, slurmctld, 2 slurmd in
network namespaces; see the slurmtest package) for the whole session, always torn down."""

from __future__ import annotations

import pytest
from slurmtest import SlurmCluster, unavailable_reason


@pytest.fixture(scope="session")
def slurm_cluster():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(nodes=2, cpus_per_node=4)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
