"""Training-set cleaning: spatial verification of image pairs and the cleaning decisions."""
