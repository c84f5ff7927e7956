"""Storage for training data: datasets packed into reproducible squashfs images (`cordee data pack`)."""
