"""``certfleet serve``: the estate on web pages, from the same inventory and store.

Above the estate layer, below the CLI; the core never imports it.

- :mod:`.users`: the users file (argon2 hashes, roles) and API tokens;
- :mod:`.auth`: sessions, CSRF tokens, login throttling;
- :mod:`.view`: the background scan shared by every viewer, and the page data;
- :mod:`.jobs`: deploy, renew and rollback run in the background from the page;
- :mod:`.app`: the Starlette application (pages, JSON API);
- :mod:`.server`: uvicorn, HTTP or HTTPS.
"""
