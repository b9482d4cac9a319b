"""The service harness shared by the benchmarks and the tests: everything that starts, waits for, stops
or cleans up a real service on loopback.

- ``ports``: ``free_port()``, ``port_open()``;
- ``waits``: ``wait_until(predicate, timeout, interval, what=, describe=, retry_on=)`` (the one polling
  loop: returns the predicate's value or raises ``TimeoutError`` naming what it waited for) and the
  HTTP probes ``http_ok`` / ``http_answers``;
- ``processes``: ``stop_process`` / ``stop_processes`` (SIGTERM, then SIGKILL; the whole process group
  of a process started in a session of its own), the environments of worker and web processes
  (``service_env``, ``worker_env``, ``web_env``), ``start_worker`` / ``start_beat`` / ``start_web``,
  ``wait_worker_ready``, a ``Supervisor`` that restarts a process that exits, ``cpu_seconds``;
- ``brokers``: ``PrivateRedis`` (a redis-server of our own), ``redis_db_url``, ``delete_keys``;
- ``databases``: ``admin_connect``, ``with_database``, ``create_database`` / ``drop_database``,
  ``scratch_database`` and ``private_database`` (created, yielded, dropped), ``terminate_backends``,
  ``settings_url``, ``drop_orphaned_databases`` (databases named after a process that is gone);
- ``scratch``: the scratch platform of a benchmark (private database, Redis DB + key prefix, temporary
  MEDIA_ROOT, Django and the Celery app configured on them): ``scratch_platform(tag)`` and the
  process-wide ``process_scratch()``;
- ``labelstudio``: a private Label Studio (``deploy/labelstudio/ls.sh``): the migrated template, copies
  of it, start / stop / restart.

Importing any of these modules is cheap (standard library only at module level): Django, Celery,
psycopg2, redis and requests are imported where they are used.
"""
