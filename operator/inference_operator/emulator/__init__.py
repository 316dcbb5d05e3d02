"""An offline Anthropic Messages API emulator for dev mode, tests and benchmarks."""
