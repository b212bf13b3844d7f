"""`mqtt`: readings from a broker, forecasts back, and signed releases in (paho-mqtt,
the `[mqtt]` extra).

bridge.py is the service; policy.py what it lets in (payload caps, topic loops, client
ids); security.py how it reaches the broker (address, password, TLS). Nothing here
imports the HTTP server.
"""
