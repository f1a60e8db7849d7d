"""Helpers shared by integration and end-to-end tests: real servers, started for real."""
