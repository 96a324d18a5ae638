"""Embedded storage: catalog, ledger, audit chain, encrypted dataset files, keys."""
