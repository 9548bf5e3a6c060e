"""The training engine: config checks, the two task loops, checkpoints and run outputs."""
