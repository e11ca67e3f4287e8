"""A resource-aware penalty: the expected cost of the derived cell (parameters, multiply-adds or latency) against a target."""
