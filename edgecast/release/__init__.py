"""Signed releases, toolkit side: keys, OpenSSF model-signing signatures of a bundle's
deployable files (signing.py), and signed, versioned, expiring release records
(record.py). The hub checks both with edgecast_runtime.releases.signature and
edgecast_runtime.releases.record."""
