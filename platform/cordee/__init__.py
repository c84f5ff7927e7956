"""cordee: container-native ML platform toolkit for Slurm GPU supercomputers."""

__version__ = "0.1.0"
