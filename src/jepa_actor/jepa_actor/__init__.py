"""Actor: Mode-2 planning through the world model, the Mode-1 policy distilled from it, and the scripted push reference."""
