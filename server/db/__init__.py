"""PostgreSQL access: where the server is, the pool, the schema, the locks."""
