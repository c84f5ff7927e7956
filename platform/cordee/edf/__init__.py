"""Environment Definition Files of the CSCS Container Engine, any EDF (not only cordee's): find,
read and layer (`base_environment`), field rules, `${VAR}` expansion, check, and a local run
through podman. See ARCHITECTURE.md."""
