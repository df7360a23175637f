"""SQL store: models and the CRUD functions shared by the API and the worker."""
