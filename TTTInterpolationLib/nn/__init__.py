"""Building blocks of the network: UVI-Net (:mod:`.networks`), the self-supervised heads, warping
by a flow, the training and test-time losses, and the image metrics they and the evaluations
share. Nothing here knows about files, devices or checkpoints.
"""
