"""cgm-ingestion: validates, normalises, deduplicates and assesses CGM readings."""
