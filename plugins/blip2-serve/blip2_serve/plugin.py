"""Registers this plugin's ``blip2`` command; light on purpose (heavy imports happen when it runs)."""
