"""The upload page at `/` (static files, a strict content security policy) and the offline API
docs at `/docs` (Swagger UI from an installed package, never a CDN)."""

from __future__ import annotations

from pathlib import Path

from ..errors import MissingDependency

try:
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse
except ImportError as _exc:  # the service is an extra: say which one
    raise MissingDependency(f"'{_exc.name}' is not installed; install the server with: "
                            "pip install \"facegender[serve]\"") from _exc

STATIC_DIR = Path(__file__).parent / "static"

# The page may load only what this server sends: no CDN, fonts or trackers, even by accident.
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
            "style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'")


def docs_page(app: FastAPI) -> HTMLResponse:
    """Swagger UI from the swagger-ui-bundle-v2 package, else a plain list of the endpoints."""
    from fastapi.openapi.docs import get_swagger_ui_html

    ui = swagger_dir()
    if ui is not None:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
            # validatorUrl would have the page fetch a badge from swagger.io.
            swagger_ui_parameters={"validatorUrl": None, "defaultModelsExpandDepth": 0})
    from html import escape

    rows = []
    for path, ops in app.openapi().get("paths", {}).items():
        for method, op in ops.items():
            rows.append(f"<li><code>{method.upper()} {escape(path)}</code> — "
                        f"{escape(op.get('summary', ''))}<p>{escape(op.get('description', ''))}</p></li>")
    return HTMLResponse(
        f"<!doctype html><meta charset=utf-8><title>{escape(app.title)} API</title>"
        f"<h1>{escape(app.title)} API</h1><p>Interactive docs need <code>pip install "
        f"swagger-ui-bundle-v2</code>. The machine-readable schema is at "
        f"<a href='/openapi.json'>/openapi.json</a>.</p><ul>{''.join(rows)}</ul>")


def swagger_dir() -> Path | None:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    path = Path(str(swagger_ui_path))
    # swagger-ui-bundle 1.x (the same module name) ships Swagger UI 4, which cannot read the
    # OpenAPI 3.1 that FastAPI writes.
    major = path.name.removeprefix("swagger-ui-").split(".")[0]
    if not major.isdigit() or int(major) < 5 or not (path / "swagger-ui-bundle.js").is_file():
        return None
    return path
