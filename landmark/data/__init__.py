"""Dataset formats, manifests, image decoding and the synthetic landmark world."""
