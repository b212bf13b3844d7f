"""Helpers and fixtures the test suites share (on sys.path through pytest's `pythonpath`).

runtime.py: the runtime's models, CLI runners, a background server and Mosquitto
helpers (usable where only the runtime is installed); broker.py: a real Mosquitto with
a password file, the documented ACL and TLS from a throwaway CA (the runtime's and the
toolkit's release tests); unit_sandbox.py: the shipped systemd unit's sandbox rebuilt
with bubblewrap."""
