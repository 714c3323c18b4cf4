"""The duty console: pages, their API, the live feed and the names they show (see docs/console.md)."""
