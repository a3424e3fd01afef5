"""Helpers for the book's chapters: plotting utilities, measurements and widget builders."""
