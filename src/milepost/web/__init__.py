"""The web UI: server-rendered pages over the management API, with small scripts for the canvas."""
