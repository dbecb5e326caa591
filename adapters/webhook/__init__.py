"""JSON webhook adapter: delivers canonical events to any HTTP endpoint (:mod:`.adapter`)."""
