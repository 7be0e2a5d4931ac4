"""ml_collections config files of the experiments."""
