"""Where config comes from: a working tree, a git repository, and following either."""
