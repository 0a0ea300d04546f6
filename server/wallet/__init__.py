"""Wallets: balances that change only through the append-only ledger."""
