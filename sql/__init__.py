"""pgqml's SQL files, installed as the package ``pgqml.sql`` (see pyproject.toml)."""
