"""A smaller load run (``bench/load.py``): 50 signed webhook deliveries (+5 duplicates) in one burst
while 5 API clients read, against gunicorn + a Celery worker process + Label Studio + PostgreSQL +
Redis. Asserts that nothing is lost or duplicated, every mask equals the ground truth and no request
got a 5xx. Times are reported by the benchmark, never asserted here.
"""

from __future__ import annotations

import json

import pytest

from tests.labelstudio.lsfixtures import LS_URL, TOKEN, labelstudio_server  # noqa: F401 - fixture

pytestmark = [
    pytest.mark.integration,
    pytest.mark.labelstudio,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def test_webhook_burst_under_api_load_loses_nothing(labelstudio_server, platform_media_root, tmp_path):  # noqa: F811
    from django.conf import settings
    from django.db import connection

    from bench.harness.brokers import redis_db_url
    from bench.harness.databases import settings_url
    from bench.load import run_load
    from tests.conftest import TEST_REDIS_DB

    result = run_load(
        media=platform_media_root,
        ls_url=LS_URL,
        ls_token=TOKEN,
        database_url=settings_url(connection.settings_dict),
        redis_url=redis_db_url(settings.REDIS_URL, TEST_REDIS_DB),
        deliveries=50,
        clients=5,
        work=tmp_path,
    )
    assert result["annotations"] == 50 and result["deliveries"] == 55, result
    assert result["lost"] == 0 and result["duplicates"] == 0 and result["wrong"] == 0, result
    assert result["stored"] == 50, result
    assert result["server_errors"] == 0, result
    assert set(result["webhook_status"]) == {"200"}, result  # duplicates are answered 200 too
    assert set(result["api_status"]) == {"200"}, result
    assert result["api_requests"] > 0, result
    print(json.dumps(result, sort_keys=True))
