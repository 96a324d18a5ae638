"""DuckDB: compile checked plans to bounded SQL and compute exact cells in memory."""
