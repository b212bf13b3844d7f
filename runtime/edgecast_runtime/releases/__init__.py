"""Signed releases on the hub (`mqtt --trust`).

delivery.py: the topics and chunk format a release travels in; updates.py: receiving,
staging, self-testing and swapping a release; assembly.py: the bounded memory of what is
on its way in; folder.py: the release folder (installed releases, staging, refusals kept); record.py: the signed, versioned,
expiring release record and its checks; signature.py: the slim verifier of OpenSSF
model-signing signatures (the `[releases]` extra: cryptography); guard.py: under
`--trust`, hot reload loads only the running release's signed files; expiry.py: a
running release past its expiry, in the status and the metrics.
"""
