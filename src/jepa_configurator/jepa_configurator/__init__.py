"""Configurator: task, goal, cost weights and mode; reacts to sustained surprise by adjusting the world model or critic."""
