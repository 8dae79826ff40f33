"""Reading what users have (prompt files) and writing what the flywheel produces."""
