"""TLS-RPT (RFC 8460): TLS results recorded per policy domain and day, and the daily reports."""
