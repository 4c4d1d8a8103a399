"""The test suite (README: python -m pytest). A package, so that the tools run from a checkout
(tools/faults) share its tiny configuration (tests.tiny)."""
