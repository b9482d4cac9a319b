"""Label Studio fixtures (defined once in ``lsfixtures`` and shared with the browser tests)."""

from tests.labelstudio.lsfixtures import *  # noqa: F403
