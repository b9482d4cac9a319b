"""Serves the dashboard from ``frontend/templates`` (a landing page for now)."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from catalog.selectors import dataset_list


@login_required
def dashboard(request):
    return render(request, "dashboard.html", {"datasets": dataset_list()[:50]})
