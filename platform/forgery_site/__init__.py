"""The Django project of the platform: settings, URLs, WSGI, and the pieces shared by all apps."""
