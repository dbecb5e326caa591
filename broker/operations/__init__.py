"""What operators watch: each target's circuit, deliveries by state, failures and queue depth (``broker status``)."""
