"""Cost module: the hard-wired intrinsic cost and the trainable critic, and the node that scores states."""
