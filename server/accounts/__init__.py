"""Accounts: sign-up, sign-in, password hashes and session credentials."""
