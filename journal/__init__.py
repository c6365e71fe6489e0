"""edms-journal: continuous capture, backup packages and natural-key restore for PostgreSQL.

The package's rooms, bottom up (imports point down; tests/test_layers.py holds them to it):
the core (``positions``, ``events``, ``codec``, ``catalog``, ``values``, ``targets``,
``errors``, ``config``), the transports (``journal.transport``), the package room
(``journal.packages``), the compactor (``compactor``, ``fold``, ``sorting``,
``stream_state``); then ``producers`` and ``restorer`` beside each other; the application
on top (``cli`` and ``commands``, ``demo``, ``sample``, ``embedded``) with the operations
layer (``jobs``, ``api``, ``dashboard``, ``server``).
"""

__version__ = "0.1.0"
