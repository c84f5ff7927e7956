"""Container runtimes shared by image builds (images/) and local EDF runs (edf/): the podman
driver and Enroot's rootfs layout."""
