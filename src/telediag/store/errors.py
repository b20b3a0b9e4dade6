"""The store's errors: what callers may catch without knowing SQLAlchemy or a driver."""


class StoreError(RuntimeError):
    """Base of the store's errors."""


class RowConflict(StoreError):
    """A unique constraint refused a row: someone recorded the same thing meanwhile."""


class DatabaseUnavailable(StoreError):
    """The database could not be reached or refused the transaction."""
