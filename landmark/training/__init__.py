"""Global model training: aspect-ratio buckets, augmentation, schedules and the (DDP-ready) loop."""
