"""The bad-input suite: every command and the env API, fed what a new user might type."""
