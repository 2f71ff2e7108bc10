"""REST front end: a thin FastAPI layer over the engine (the only package that imports fastapi)."""
