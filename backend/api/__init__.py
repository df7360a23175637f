"""HTTP routes (thin: parse, call the store, shape the response)."""
