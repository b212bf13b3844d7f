"""Forecast skill on the hub.

store.py keeps pending forecasts and their scores in SQLite beside the state file;
rolling.py turns them into rolling MAE and RMSE per lead against persistence, with
the skill and drift alarms; metrics.py shows them (and the service's counters) to
Prometheus at `/metrics` and as JSON.
"""
