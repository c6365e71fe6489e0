"""The monitoring dashboard: server-rendered pages (Jinja2) over the API's state, with a
little vendored JavaScript that polls the API for live figures. No CDN, ever."""
