"""The database: engines and transactions, the schema, the migrations."""
