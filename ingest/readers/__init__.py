"""Readers: every supported input format -> canonical Arrow record batches."""
