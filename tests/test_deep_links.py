"""Deep links are limited to the app's scheme and https."""

import pytest

from webadmin.services import ServiceError
from webadmin.services.deep_links import validate_deep_link, validate_image_url


@pytest.mark.parametrize("link", ["javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,<script>",
                                  "vbscript:x", "file:///etc/passwd", "http://example.com", "other://x",
                                  "https:///nohost", "nibs://a b", "nibs://x\ny"])
def test_refused(link):
    with pytest.raises(ServiceError):
        validate_deep_link(link, "nibs")


def test_allowed_and_normalised():
    assert validate_deep_link("nibs://offers/7", "nibs") == "nibs://offers/7"
    assert validate_deep_link("NIBS://offers/7", "nibs") == "NIBS://offers/7"
    assert validate_deep_link("https://nibs.example.com/o/7", "nibs") == "https://nibs.example.com/o/7"
    assert validate_deep_link("/offers/7", "nibs") == "nibs://offers/7"
    assert validate_deep_link("  ", "nibs") is None
    with pytest.raises(ServiceError, match="no deep-link scheme"):
        validate_deep_link("offers/7", None)


def test_images_are_https_only():
    assert validate_image_url("https://cdn.example.com/a.png") == "https://cdn.example.com/a.png"
    for bad in ("http://cdn.example.com/a.png", "javascript:x", "data:image/png;base64,AAA"):
        with pytest.raises(ServiceError):
            validate_image_url(bad)
