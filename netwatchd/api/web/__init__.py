"""The read-only web UI (web.*): app.py answers the pages and their data, views.py builds the
data from the read model, live.py feeds the open pages a tick at a time, guard.py says who may
read and what every answer carries, static/ holds the page's own script and style."""
