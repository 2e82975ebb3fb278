"""Perception module of the JEPA agent: camera images -> latent states with the world model's encoder."""
