"""driftline's entry points: the composition root, above the services.

The command line (``cli``), the demo and its synthetic scenario, the embedded
mode (``embedded``: every service in one process), ``serve`` (one service per
process), the ``wiring`` that builds a service's runner the same way for both,
and the HTML ``report``. Modules here may import the services and the library;
nothing in the library (``driftline.*`` outside this package) or in the
services imports them (``tests/unit/test_layers.py`` checks it).
"""
