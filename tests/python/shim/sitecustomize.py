"""Points the seed programs' default broker port at the broker under test.

The seed programs connect to `localhost` on AMQP's default port, 5672. The tests start Warren on a
port of their own, so this file (put on PYTHONPATH only for the seed programs' processes) changes
the *default port* of pika and kombu to $WARREN_PORT. The programs' own text stays as published.
"""
import collections
import collections.abc
import os

# pika 0.13 (the API the blog's programs use) predates Python 3.10, which removed the old aliases
# collections.Callable & co. Restoring the alias is a Python compatibility fix, not a broker one.
if not hasattr(collections, "Callable"):
    collections.Callable = collections.abc.Callable

_port = os.environ.get("WARREN_PORT")
if _port:
    try:
        import pika.connection

        pika.connection.Parameters.DEFAULT_PORT = int(_port)
    except ImportError:
        pass
    try:
        import kombu.transport.pyamqp

        kombu.transport.pyamqp.Transport.default_port = int(_port)
    except ImportError:
        pass
