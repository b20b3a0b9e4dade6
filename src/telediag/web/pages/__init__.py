"""Server-rendered pages for readers, clinics and administrators (templates and static assets ship in the package)."""
