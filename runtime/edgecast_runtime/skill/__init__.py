"""Forecast skill on the hub.

store.py keeps pending forecasts and their scores in SQLite beside the state file;
rolling.py turns them into rolling MAE and RMSE per lead against persistence, with
the skill and drift alarms; metrics.py shows them (and the service's counters) to
Prometheus at `/metrics` and as JSON. comparison.py judges a challenger against the
champion on their paired errors (margin, fewest pairs, Diebold-Mariano with a HAC
variance): the rule of `edgecast fleet promote` (docs/promotion.md).
"""
