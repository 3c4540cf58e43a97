"""Reports about one person: the 14-day ambulatory glucose profile (JSON, PNG, PDF)."""
