"""Image recipes: spec schema and validation, Jinja2 rendering (Containerfile, EDF, uenv),
podman/enroot/mksquashfs build drivers, and EDF check, install and local run."""
