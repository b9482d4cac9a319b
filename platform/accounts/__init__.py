"""Users and roles: the ``admin`` and ``annotator`` groups, tokens, the users API."""
