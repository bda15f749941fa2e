"""Training: the GanState, losses, schedules, the jitted step and the loop that drives it."""
