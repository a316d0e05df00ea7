"""Storage and query engines behind one seam (the `Store` protocol); DuckDB is the embedded default."""
