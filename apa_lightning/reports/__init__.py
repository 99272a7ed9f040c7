"""Tables and figures computed from results."""
