"""The studio's database: SQLAlchemy 2 models, repository functions and Alembic
migrations. SQLite (WAL mode) by default, PostgreSQL for shared deployments.

The jobs and API layers talk to the database only through :mod:`saestudio.store.repo`;
the ML core (``sae``, ``activations``, ``training``) never imports this package.
"""
