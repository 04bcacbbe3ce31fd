"""The training stage: the config, the FSDP2 training loop, checkpoints and metrics."""
