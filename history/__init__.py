"""Inspectors' histories: hazard/incident queries, retention and roll-ups, accidents, association, dashboards."""
