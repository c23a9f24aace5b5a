"""Environments bundled with drex-opt."""
