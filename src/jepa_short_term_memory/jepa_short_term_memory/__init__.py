"""Short-term memory: the agent's recent transitions, persisted to bags for adjustments."""
