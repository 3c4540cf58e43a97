"""The web UI the gateway serves at `/`: static HTML, CSS and JS modules, no build step."""
