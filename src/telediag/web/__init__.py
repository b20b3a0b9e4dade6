"""The web entry point: the HTTP API (FastAPI), built from one router per stage.

Routes only translate HTTP to a use case and back; they hold no SQL and no business rule.
"""

from telediag.web.app import BackgroundServer, create_app

__all__ = ["create_app", "BackgroundServer"]
