"""The local stack (emulator, gateway, operator processes) for `dev` and the tests."""
