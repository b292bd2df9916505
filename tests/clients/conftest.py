"""Wire tests of the upstream clients, with respx standing in for the upstreams."""

import respx.mocks

# The clients send through `app.clients.transport.AiohttpTransport`, not httpcore, so respx's
# default mocker (which patches httpcore) would not see them. Its "httpx" mocker replaces the
# transport an httpx client picks for each request, whatever that transport is.
respx.mocks.DEFAULT_MOCKER = "httpx"
