"""What applications build with, on top of the Trio layer: rooms and broadcast
(``_broadcast``), backplanes across processes (``_backplane``, ``_redis``), routing and
authentication (``_router``, ``_auth``), worker processes (``_workers``), startup errors
(``_startup``), the Prometheus export (``_prometheus``) and the command line (``_cli``).

They use the layers below through their public names or the documented ``ws.outbox`` and
``ws.on_close()``; the public names are re-exported by ``trio_ws``.
"""
