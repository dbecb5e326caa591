"""Helpers shared by the test suite: real services, a fake webhook receiver, a running broker."""
