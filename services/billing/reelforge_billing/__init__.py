"""Billing: a double-entry ledger with reserve on admission, settle on completion, release on failure."""
