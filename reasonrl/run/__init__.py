"""A run's configuration and planning (paper units -> TRL's, checks, the dry run) and its training data."""
