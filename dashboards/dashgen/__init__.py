"""The parts of fieldproof's Grafana dashboards and provisioning, split along their seams;
``dashboards/generate.py`` renders and writes them."""
