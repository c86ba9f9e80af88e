"""The `reelforge` command line."""
