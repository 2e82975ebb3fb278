"""Bring-up of the JEPA agent: graph description, launchers, params and the `jepa` command."""
