"""gunicorn as docker-compose.yml and config/Dockerfile run it: `gunicorn config.wsgi --config config/gunicorn.conf.py`.

The access log goes to standard output without credentials: the request line is printed without its query string
(`%(U)s` is the path alone; the OpenID conformance suite's automated-approval URL carries a secret there) and without
the Referer, and config.logs redacts what a path may still carry (an approval link's token) from every record, in
the master (installed here) and in the workers (installed again by Django's setup).
"""

from __future__ import annotations

from config.logs import install_record_factory

install_record_factory()

bind = "0.0.0.0:8000"
workers = 4
# Threads, with HTTP keep-alive (issue 17): sync workers close the connection after every answer, so each token poll
# paid a TCP accept, gunicorn's connection setup and a graceful close besides its own work, and a worker sat idle
# while bc-authorize waited on PostgreSQL. Measured on a shared (noisy) 2-core machine with wrk polling one request
# (slow_down): gthread took 10-25% less gunicorn CPU per poll than sync, and as many or more polls a second. The code
# keeps per-thread state where it has any (Django's database connections, authz.ciba.poll's Redis connection).
worker_class = "gthread"
threads = 4
accesslog = "-"
# The same lines as gunicorn's own logger writes, at a fraction of the cost (config/access_log.py).
logger_class = "config.access_log.AccessLogger"
# gunicorn's default format less the query string and the Referer: client address, client_id of HTTP Basic
# (%(u)s), time, method, path, protocol, status, bytes, user agent, duration in seconds.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s" %(L)s'
