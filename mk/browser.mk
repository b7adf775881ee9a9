# Headless Chromium (Debian's `chromium` package) for the browser test of the HTML report
# (tests/test_report_browser.py, which skips saying so where it is missing). Installed like PostgreSQL:
# apt-get, as root or where apt-get needs no sudo; no browser is downloaded by pip or playwright.
TEST_DEPS += browser-deps

.PHONY: browser-deps

browser-deps:
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
	  echo "installing chromium (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
