"""The agent of the modular architecture: cost (intrinsic + critic), short-term memory, actor, configurator."""
