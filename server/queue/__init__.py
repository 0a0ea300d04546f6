"""The waiting queue: numbered tokens, the admission window, the gate, expiry.

See docs/queue.md for the invariant, the token format and the sequence diagrams.
"""
