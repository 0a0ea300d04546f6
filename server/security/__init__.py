"""Defences that apply to every method: request text checks, TLS credentials."""
