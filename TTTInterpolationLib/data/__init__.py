"""What the engine computes on: the in-memory 4D series (:mod:`.volume`), the mapping onto the
network's grid and the intensity preprocessing, training datasets and augmentation, and the
synthetic phantoms with exact ground truth.
"""
