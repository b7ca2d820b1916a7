"""The Trio layer: connections on Trio streams, the server and the client.

A task per connection (``_websocket``), its outgoing bytes through one bounded outbox
(``_outbox``), keepalive on one timer per server (``_timer``), listeners (``_server``) and
connecting (``_client``, ``_reconnect``). Built on ``trio_ws.protocol`` only; the public
names are re-exported by ``trio_ws``.
"""
