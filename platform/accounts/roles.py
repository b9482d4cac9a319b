"""The two roles of the platform, as Django groups."""

ADMIN = "admin"
ANNOTATOR = "annotator"
ROLES = (ADMIN, ANNOTATOR)
