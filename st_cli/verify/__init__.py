"""Verification of a saved folder: the table of checks and the module-by-module comparison."""
