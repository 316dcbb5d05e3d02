"""The ``inference-operator`` command line."""
