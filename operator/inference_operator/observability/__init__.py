"""What the chart ships for monitoring, as Python data: the alerts (alerts.py) and the
Grafana dashboard (dashboard.py). ``inference-operator generate`` renders them into the
chart's files/observability/ (generate.py); tests fail when those copies drift."""
