"""Imports every section's demo loader so each registers with `webadmin.services.demo` (import once at start).

Order matters (loaders run in import order), so the imports are kept as written, not sorted.
"""

# isort: off
import webadmin.services.demo_audience  # noqa: F401
import webadmin.services.demo_simulator  # noqa: F401  (after the audience: it needs the demo app)
import webadmin.services.demo_catalog  # noqa: F401  (after the audience: it needs the demo app)
import webadmin.services.demo_campaigns  # noqa: F401  (after the catalog: pushes of offers)
import webadmin.services.demo_sms  # noqa: F401  (after the audience: phones for the SMS fallback demo)
# isort: on
