"""`serve`: JSON over HTTP on the standard library's threading server.

command.py runs the service (model holder, watchdog, signals, draining); server.py
answers requests; limits.py bounds what a request may be before an endpoint sees it;
auth.py checks the bearer token; connections.py bounds the connections held;
defaults.py holds the defaults the command line shows without loading the server.
"""
