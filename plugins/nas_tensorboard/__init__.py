"""TensorBoard monitoring of runs, as a plugin on the lifecycle hooks."""
