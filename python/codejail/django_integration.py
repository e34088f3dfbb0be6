"""Django glue: configure codejail from ``settings.CODE_JAIL`` once, at start-up.

Add ``codejail.django_integration.ConfigureCodeJailMiddleware`` to ``MIDDLEWARE``: Django
instantiates it when it loads the middleware; it applies the settings and then takes
itself out of the chain (``MiddlewareNotUsed``), the usual Django idiom for start-up code.
"""

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.utils.deprecation import MiddlewareMixin

from . import django_integration_utils

__all__ = ["ConfigureCodeJailMiddleware", "MiddlewareNotUsed"]


class ConfigureCodeJailMiddleware(MiddlewareMixin):
    """Apply ``settings.CODE_JAIL`` and remove itself from the middleware chain."""

    def __init__(self, *args, **kwargs):
        django_integration_utils.apply_django_settings(settings.CODE_JAIL)
        super().__init__(*args, **kwargs)
        raise MiddlewareNotUsed
