"""`make bench`: figures for the hot paths, each against a baseline measured in the same run."""
