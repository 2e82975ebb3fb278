"""JEPA world model: predicts the abstract representation of the next state, never its pixels."""
