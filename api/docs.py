"""Interactive API documentation at ``GET /docs``, offline.

Swagger UI renders the served ``/openapi.json``. Its JavaScript and CSS are
the files the PyPI package ``swagger-ui-py`` ships (Swagger UI 5, which reads
OpenAPI 3.1), served from ``/docs/assets/``: the page loads nothing from
another host, and the online validator badge is switched off.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["ASSETS_PATH", "docs_routes", "swagger_ui_assets"]

ASSETS_PATH = "/docs/assets"

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>mastery-stream API</title>
  <link rel="stylesheet" href="{root}{assets}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{root}{assets}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "{root}/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null,
      tryItOutEnabled: false
    }});
  </script>
</body>
</html>
"""


def swagger_ui_assets() -> Path:
    """The folder of Swagger UI's static files in the installed package."""
    folder = Path(str(files("swagger_ui") / "static"))
    if not (folder / "swagger-ui-bundle.js").is_file():
        raise RuntimeError(f"swagger-ui-py's assets are missing from {folder}")
    return folder


def docs_routes() -> list[BaseRoute]:
    """``GET /docs`` and its assets."""

    async def page(request: Request) -> Response:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return HTMLResponse(_PAGE.format(root=root, assets=ASSETS_PATH))

    return [
        Route("/docs", page, methods=["GET"]),
        Mount(ASSETS_PATH, StaticFiles(directory=swagger_ui_assets())),
    ]
